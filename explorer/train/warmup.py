"""The first run after installing: compile the kernels in two processes at once.

Numba compiles a kernel the first time it is called and keeps the machine code in a disk
cache (the `__pycache__` folder beside the kernels), so this happens once per install. But
that once is slow: a process compiles one function at a time (Numba holds a lock while it
compiles), and a training step needs about 21 s of compiling on a 2-core laptop. So the
Trainer's first step calls `start(model)` (the model itself knows nothing of this), which,
with an empty cache,

1. launches a helper process (`helper()` below, in a new Python) that builds a small model
   of the same kind and runs one training step on it with every kernel except
   `HELPER_KERNELS` (the backward pass, bar its first kernel, and the optimizer) replaced by
   a do-nothing function: so it compiles those, and writes them to the cache, and no others;
2. meanwhile runs a forward and backward pass of a small model here with the helper's
   kernels doing nothing, which compiles all the rest;
3. waits for the helper to end: the real step then loads the helper's kernels from the
   cache instead of compiling them a second time.

Nothing changes in the numbers: the helper only fills the cache with the same code this
process would have compiled. If the helper fails or is slow, nothing breaks: the wait ends
when the helper does (or after `WAIT_S`), and this process compiles whatever is missing.
`start` does its work once per process; `reset()` forgets that it ran (for tests, or after
clearing the cache). Set the environment variable EXPLORER_PARALLEL_COMPILE=0 to turn it off.
Measured (tiny preset, 2-core AMD EPYC, cold cache): import + first step 21 s without the
helper, 12-16 s with it; the two processes slow each other down on 2 cores, so more cores
gain more.
"""
import json
import os
import subprocess
import sys
import threading

import numba
import numpy as np

from .. import kernels
from ..kernels import attention
from ..model import GPT, GPTConfig

#: Compiled by the helper: the backward pass (but its first kernel) and the optimizer, about
#: half of all the compiling; this process compiles the forward pass meanwhile.
HELPER_KERNELS = ("matmul_backward", "attention_backward", "gelu_backward", "layernorm_backward",
                  "encoder_backward", "grad_norm", "adamw_update")
WAIT_S = 300.0
#: The helper's program.
HELPER_COMMAND = "import sys, json; from explorer.train.warmup import helper; helper(json.loads(sys.argv[1]))"

# This module's state, reset by reset():
_started = False                # start() did its work in this process
_helper_process = None          # the helper's Popen, once started (for tests)
_lock = threading.Lock()


def enabled():
    """False when turned off, when Numba does not compile (NUMBA_DISABLE_JIT), or with one core."""
    if os.environ.get("EXPLORER_PARALLEL_COMPILE", "1") == "0" or numba.config.DISABLE_JIT:
        return False
    return (os.cpu_count() or 1) >= 2


def cache_is_cold():
    """True when the heaviest helper kernel has never been compiled into a writable cache
    (then neither has the rest, in all likelihood)."""
    dispatcher = attention.head_backward
    if dispatcher.overloads:                    # compiled in this process already
        return False
    try:
        index = dispatcher._cache._cache_file._index_path
    except AttributeError:                      # a Numba without this cache layout
        return False
    folder = os.path.dirname(index)
    if os.path.exists(index):
        return False
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK)           # without a cache the helper's work is lost


def start(model) -> bool:
    """On the first call in this process, with a cold cache: launch the helper (see the
    module's docstring) for a model of model's kind, compile the rest here, and wait for the
    helper. Returns True if a helper was started. Later calls return False at once; a call
    from another thread meanwhile waits until the first is done."""
    global _started
    if _started:                    # every later step: no lock, nothing to do
        return False
    with _lock:
        if _started:
            return False
        try:
            return enabled() and cache_is_cold() and _compile_with_helper(model)
        finally:
            _started = True


def _compile_with_helper(model):
    global _helper_process
    # Numba compiles for argument types, not sizes: a model this small compiles the same
    # kernels as `model` (float32 arrays of the same shapes' ranks), at a fraction of the memory
    config = model.config
    spec = {"n_layer": 1, "n_head": config.n_head, "n_embd": 4 * config.n_head,
            "vocab_size": min(config.vocab_size, 32), "block_size": min(config.block_size, 8),
            "kernels": list(HELPER_KERNELS)}
    env = dict(os.environ, EXPLORER_PARALLEL_COMPILE="0")
    if numba.config.CACHE_DIR:      # the helper must fill the cache this process reads
        env["NUMBA_CACHE_DIR"] = numba.config.CACHE_DIR
    try:
        helper_process = _helper_process = subprocess.Popen(
            [sys.executable, "-c", HELPER_COMMAND, json.dumps(spec)], env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError:
        return False
    try:
        _compile_the_rest(type(model), spec)
    except Exception:       # only a head start: the real step compiles what is missing
        pass
    try:
        helper_process.wait(timeout=WAIT_S)
    except subprocess.TimeoutExpired:
        helper_process.kill()
        helper_process.wait()
    return True


def reset() -> None:
    """Forget that start() ran in this process: the next start() looks at the cache again."""
    global _started, _helper_process
    with _lock:
        _started = False
        _helper_process = None


def _do_nothing(*args):
    pass


def _small_model(model_class, spec):
    return model_class(GPTConfig(spec["n_layer"], spec["n_head"], spec["n_embd"], spec["vocab_size"],
                                 spec["block_size"]))


def _compile_the_rest(model_class, spec):
    """In this process, meanwhile: a forward and backward pass of a small model with the
    helper's kernels doing nothing, so that every other kernel of the model compiles now,
    whatever order the real step asks for them in. (The registry is swapped for the
    duration, under the model's lock: the compute lock every model and trainer holds.)"""
    model = _small_model(model_class, spec)
    idx = np.zeros((1, spec["block_size"]), np.int64)
    with model.lock, kernels.use(**{name: _do_nothing for name in HELPER_KERNELS}):
        model.forward(idx, idx)
        model.backward()


def helper(spec):
    """Run in the helper process: one training step of a small model, with only
    spec["kernels"] real (the rest do nothing), so that exactly those get compiled."""
    from .trainer import Trainer  # here, not above: the trainer imports this module

    model = _small_model(GPT, spec)
    vocab_size = spec["vocab_size"]

    class Tokens:
        tokenizer = None

        def get_batch(self, split, batch_size, block_size, rng):
            t = rng.integers(0, vocab_size, size=(batch_size, block_size + 1), dtype=np.int64)
            return t[:, :-1].copy(), t[:, 1:].copy()

    skip = {name: _do_nothing for name in kernels.names() if name not in spec["kernels"]}
    # comm=None: started by a rank of an mpiexec run, this process inherits the launcher's
    # variables, but it is no rank and must not join (or wait for) the others
    trainer = Trainer(model, Tokens(), batch_size=1, lr=1e-3, comm=None)
    with kernels.use(**skip):
        trainer.step()
