"""Plain functions and fake data sources that several test files import (`from helpers import ...`).

Fixtures live in conftest.py; what a test calls directly lives here, once. A helper used by one
test file belongs in that file."""
import threading
import tracemalloc

import numpy as np

from explorer import GPT, kernels
from explorer.lab.bench import RandomTokens

GATE_TIMEOUT_S = 60   # seconds a gated step waits; only reached when a test is broken


# --------------------------------------------------------------------------- models
def randomize_params(model, seed=0):
    """Give every parameter a random value that exercises it: weights of scale 1/sqrt(fan_in)
    (so activations stay O(1) and GELU/softmax are non-linear), embeddings of scale 0.3, and
    layernorm gains and biases away from their 1 / 0 defaults."""
    rng = np.random.default_rng(seed)
    for name, p in model.params.items():
        if name.endswith(".bias"):
            p[...] = rng.normal(0.0, 0.1, p.shape)
        elif ".ln" in name or name.startswith("ln_f"):
            p[...] = 1.0 + rng.normal(0.0, 0.2, p.shape)
        elif name in ("wte", "wpe"):
            p[...] = rng.normal(0.0, 0.3, p.shape)
        else:
            p[...] = rng.normal(0.0, 1.0 / np.sqrt(p.shape[1]), p.shape)
    return model


def random_model(config, seed=0, strong=False):
    """A GPT with GPT-2's init (seeded), then biases and layernorm params moved off their 0 / 1
    starting values, so a swapped or dropped bias or gain cannot go unnoticed.

    strong=True also scales the block matrices to std 1/sqrt(fan_in), so attention is peaked and
    GELU far from linear, where GPT-2's std 0.02 leaves both close to their small-input
    behaviour. (randomize_params replaces every value instead; this keeps the init's.)"""
    model = GPT(config, seed=seed)
    rng = np.random.default_rng(seed + 100)
    for name, p in model.params.items():
        if name.endswith(".bias") or ".ln" in name or name.startswith("ln_f"):
            p += rng.normal(0.0, 0.5, size=p.shape).astype(np.float32)
        elif strong and name.startswith("blocks."):
            p *= 1.0 / (0.02 * np.sqrt(p.shape[1]))   # was N(0, 0.02 or less)
    return model


def assert_same_params(a, b):
    """Same config, and every parameter float32 and bitwise equal."""
    assert a.config == b.config
    assert a.params.keys() == b.params.keys()
    for name in a.params:
        assert a.params[name].dtype == np.float32, f"{name}: {a.params[name].dtype}, expected float32"
        np.testing.assert_array_equal(a.params[name], b.params[name], err_msg=name)


# --------------------------------------------------------------------------- trainer state
def snapshot(trainer):
    """What a failed step or restore must leave bitwise as it was."""
    return (trainer.model.flat_params.copy(), trainer.m.copy(), trainer.v.copy(),
            trainer.step_count, trainer.rng.bit_generator.state)


def assert_unchanged(trainer, before):
    """The trainer is bitwise as snapshot(trainer) found it."""
    params, m, v, step, rng_state = before
    np.testing.assert_array_equal(trainer.model.flat_params, params)
    np.testing.assert_array_equal(trainer.m, m)
    np.testing.assert_array_equal(trainer.v, v)
    assert trainer.step_count == step
    assert trainer.rng.bit_generator.state == rng_state


def peak_bytes_of(call):
    """Peak memory NumPy and Python allocate during call() (NumPy reports to tracemalloc)."""
    tracemalloc.start()
    try:
        call()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


# --------------------------------------------------------------------------- data sources
# RandomTokens (uniformly random next-token batches, no tokenizer) is the benchmarks' own,
# explorer.lab.bench.RandomTokens: imported above, so tests use the same one.

class GatedTokens(RandomTokens):
    """RandomTokens whose get_batch blocks while `gate` is closed, after setting `entered`.
    A step is then held in progress (inside get_batch) for as long as a test needs, so what
    happens between steps is deterministic. No tokenizer: samples fall back to token ids."""

    def __init__(self, vocab_size, seq_len):
        super().__init__(vocab_size, seq_len)
        self.gate, self.entered = threading.Event(), threading.Event()
        self.gate.set()

    def hold(self):
        """Make the next step block in get_batch until gate.set()."""
        self.entered.clear()
        self.gate.clear()

    def get_batch(self, split, batch_size, block_size, rng):
        self.entered.set()
        assert self.gate.wait(GATE_TIMEOUT_S), "the test never opened the gate"
        return super().get_batch(split, batch_size, block_size, rng)


# --------------------------------------------------------------------------- kernel spies
#: the forward kernels a KV-cached decode step calls
SPIED = ("encoder_forward", "layernorm_forward", "matmul_forward", "attention_decode", "gelu_forward",
         "residual_forward")


def spies(calls):
    """Kernels that run the shipped ones and record (name, shape of their first array)."""
    def spy(name):
        shipped = kernels.shipped(name)

        def kernel(*args):
            first = args[1] if name == "attention_decode" else args[0]   # attention: its qkv (B, n, 3C)
            calls.append((name, first.shape))
            shipped(*args)
        return kernel
    return {name: spy(name) for name in SPIED}
