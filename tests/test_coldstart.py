"""The first run's compiling, split over two processes (explorer/train/warmup.py)."""
import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from explorer import GPT, GPTConfig, Trainer, kernels
from explorer.lab.bench import RandomTokens
from explorer.train import warmup as coldstart

CONFIG = dict(n_layer=2, n_head=2, n_embd=16, vocab_size=23, block_size=8)

SCRIPT = """
import json, sys, numpy as np
import explorer
from explorer import GPT, GPTConfig, Trainer
from explorer.train import warmup as coldstart
from explorer.lab.bench import RandomTokens
from explorer.kernels import adamw, attention
cfg = json.loads(sys.argv[1])
trainer = Trainer(GPT(GPTConfig(**cfg), seed=0), RandomTokens(cfg["vocab_size"], 8), batch_size=2,
                  lr=1e-2, seed=0)
trainer.threads = 1
losses = [trainer.step()["loss"] for _ in range(2)]
np.save(sys.argv[2], trainer.model.flat_params)
helper = coldstart._helper_process
print(json.dumps({"losses": losses, "helper": None if helper is None else helper.wait(),
                  "head_backward_hits": sum(attention.head_backward.stats.cache_hits.values()),
                  "head_backward_misses": sum(attention.head_backward.stats.cache_misses.values())}))
"""


def _two_steps_here():
    trainer = Trainer(GPT(GPTConfig(**CONFIG), seed=0), RandomTokens(CONFIG["vocab_size"], 8),
                      batch_size=2, lr=1e-2, seed=0)
    trainer.threads = 1
    losses = [trainer.step()["loss"] for _ in range(2)]
    return losses, trainer.model.flat_params.copy()


def test_first_step_with_an_empty_cache_compiles_in_a_helper_and_changes_nothing(tmp_path):
    cache = tmp_path / "numba-cache"
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    env.pop("EXPLORER_PARALLEL_COMPILE", None)
    run = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(CONFIG), str(tmp_path / "p.npy")],
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["helper"] == 0, "the helper process did not start, or failed"
    # the helper wrote its kernels to the cache, and this process loaded them from there
    written = {p.name.split("-")[0] for p in cache.rglob("*.nbi")}
    assert {"attention.head_backward", "adamw.adamw_update", "clip.grad_norm"} <= written
    assert result["head_backward_hits"] >= 1 and result["head_backward_misses"] == 0
    # same numbers as a process that compiled everything itself (this one, warm cache)
    losses, params = _two_steps_here()
    np.testing.assert_allclose(result["losses"], losses, rtol=1e-6)
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), params, rtol=1e-5, atol=1e-7)


def test_a_warm_process_starts_no_helper():
    _two_steps_here()                       # head_backward (attention_backward's) is compiled here now
    assert not coldstart.cache_is_cold()


def test_start_looks_at_the_cache_once_per_process_until_reset(monkeypatch):
    looked = []
    monkeypatch.setattr(coldstart, "enabled", lambda: True)
    monkeypatch.setattr(coldstart, "cache_is_cold", lambda: looked.append(1) or False)   # warm: no helper
    model = GPT(GPTConfig(**CONFIG))
    coldstart.reset()
    try:
        assert coldstart.start(model) is False
        assert coldstart.start(model) is False
        assert looked == [1], "a second start() in the same process looked at the cache again"
        coldstart.reset()
        coldstart.start(model)
        assert looked == [1, 1], "start() after reset() did not look at the cache again"
    finally:
        coldstart.reset()


def test_the_trainer_starts_the_warm_up_and_the_model_does_not(monkeypatch):
    started = []
    monkeypatch.setattr(coldstart, "start", started.append)
    model = GPT(GPTConfig(**CONFIG))
    idx = np.zeros((1, 4), np.int64)
    model.forward(idx, idx)
    model.backward()
    assert started == [], "the model called warm-up itself"
    Trainer(model, RandomTokens(CONFIG["vocab_size"], 8), batch_size=2, lr=1e-2).step()
    assert started == [model], f"the trainer's step started warm-up with {started}; expected [the model]"


def test_the_model_floor_imports_only_the_kernels():
    """explorer/model may import explorer.kernels and nothing else of ours: no warm-up, no trainer."""
    outside = []
    for path in sorted((Path(coldstart.__file__).parents[1] / "model").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level >= 2:     # from .. import kernels
                module = "explorer." + (node.module or ",".join(alias.name for alias in node.names))
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                module = node.module
            elif isinstance(node, ast.Import):
                module = ",".join(alias.name for alias in node.names)
            else:
                continue
            if "explorer" in module.split(".")[0] and not module.startswith("explorer.kernels"):
                outside.append(f"{path.name}: {module}")
    assert outside == [], f"explorer/model imports from above the kernels: {outside}"
    assert not hasattr(kernels, "_pending") and not hasattr(kernels, "wait_before_use"), \
        "the kernel registry carries warm-up state again"


def test_import_explorer_leaves_the_optional_modules_for_later():
    """`import explorer` + a first step is timed in the bench (target 2 s); the modules a step
    does not need load on first use, and every public name still resolves."""
    script = ("import sys, explorer\n"
              "eager = sorted(m for m in ('explorer.io.checkpoint', 'explorer.io.hf', 'explorer.io.llmc', "
              "'explorer.data', 'explorer.tokenizers', 'explorer.train.presets', 'explorer.lab') if m in sys.modules)\n"
              "resolved = {name: getattr(explorer, name).__module__ for name in explorer.__all__ "
              "if hasattr(getattr(explorer, name), '__module__')}\n"
              "from explorer import save, KernelLab\n"
              "print(eager, resolved['save'], resolved['KernelLab'], explorer.lab.__name__, "
              "'load' in dir(explorer))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[]", "explorer.io.checkpoint", "explorer.lab.retrain", "explorer.lab", "True"]
    import explorer
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = explorer.no_such_name
