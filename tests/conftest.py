"""Shared fixtures. Keep this small: helpers used by one test file belong in that file."""
# explorer first: it sets the thread pools' wait policy, which only counts before NumPy and
# torch load their OpenMP/BLAS libraries. Imported after torch, every kernel call and torch
# op here ran ~20-40x slower (threads of one pool spinning while the other computes).
import explorer  # noqa: F401  (isort: skip)
import tracemalloc

import numpy as np
import pytest


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


@pytest.fixture
def random_gpt():
    """Factory: random_gpt(seed=0, **GPTConfig fields) -> explorer GPT with randomized params."""
    from explorer import GPT, GPTConfig

    def make(seed=0, **config):
        return randomize_params(GPT(GPTConfig(**config)), seed)
    return make


def snapshot(trainer):
    """What a failed step or restore must leave bitwise as it was."""
    return (trainer.model.flat_params.copy(), trainer.m.copy(), trainer.v.copy(),
            trainer.step_count, trainer.rng.bit_generator.state)


def assert_unchanged(trainer, before):
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
