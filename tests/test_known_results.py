"""benchmarks/known_results.py: skipped, saying why, when GPT-2 is not cached (it never
downloads); every section computed on a random GPT-2-vocabulary model given as a folder."""
import os
import subprocess
import sys
import warnings
from pathlib import Path

from explorer import GPT, GPTConfig
from explorer.io.hf import save_hf

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "known_results.py"
TIKTOKEN_CACHE = ROOT.parent / "shared" / "data" / "tiktoken_cache"


def run_script(args, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update(HF_HOME=str(tmp_path / "hf"), TIKTOKEN_CACHE_DIR=str(TIKTOKEN_CACHE),
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p))
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=env, capture_output=True,
                          text=True, timeout=300, cwd=ROOT)


def test_without_cached_weights_it_says_it_is_skipped_and_why(tmp_path):
    done = run_script([], tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("SKIPPED: 'gpt2' is not in the local Hugging Face cache")
    assert str(tmp_path / "hf" / "hub") in done.stdout and "explorer download gpt2" in done.stdout


def test_every_section_runs_on_a_random_gpt2_vocabulary_model(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        save_hf(GPT(GPTConfig(n_layer=2, n_head=2, n_embd=16, vocab_size=50257, block_size=64)),
                tmp_path / "model")
    done = run_script([str(tmp_path / "model"), "--batch", "2", "--length", "12"], tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "SKIPPED" not in out
    for expected in ("1. Logit lens", "p(' Paris')", "block 1", "2. Induction scores",
                     "top heads: ", "none of them is in this model's 2 layers x 2 heads", "3. IOI",
                     "When   Mary", "heads patched one at a time", "direct logit attribution"):
        assert expected in out, f"{expected!r} missing from:\n{out}"
    # the attribution's parts add up to the model's logit difference (printed side by side)
    line = next(x for x in out.splitlines() if "the parts add up" in x)
    assert line.split(":")[1].split("=")[0].strip() == line.split("model's")[1].strip(" )")
