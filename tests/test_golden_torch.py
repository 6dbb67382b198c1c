"""Golden test: explorer's whole model against an independent PyTorch GPT-2 (float64).

For random weights (layernorm gains and biases perturbed away from 1 and 0) and random
batches, explorer's logits, loss and EVERY parameter gradient must agree with torch to a
relative error max|a - b| / max|b| <= 1e-4 per tensor. explorer runs in float32, so
agreement to ~1e-6 is typical; 1e-4 leaves room for accumulated rounding, while a wrong
formula anywhere lands far above it (see test_kernels.py::test_wrong_kernel_is_detected).
"""
from dataclasses import dataclass

import numpy as np
import pytest
from torch_gpt2 import golden_errors

from explorer import GPTConfig, kernels

TOLERANCE = 1e-4


@dataclass
class Case:
    config: dict
    B: int
    T: int
    ignore_fraction: float = 0.0   # share of targets set to -1 (positions without a loss)


CASES = {
    "small": Case(dict(n_layer=2, n_head=4, n_embd=32, vocab_size=64, block_size=16), B=2, T=9),
    "one_head": Case(dict(n_layer=2, n_head=1, n_embd=16, vocab_size=40, block_size=8), B=2, T=8),
    "T_1": Case(dict(n_layer=2, n_head=2, n_embd=12, vocab_size=31, block_size=8), B=3, T=1),
    "T_is_block_size": Case(dict(n_layer=1, n_head=3, n_embd=24, vocab_size=50, block_size=12),
                            B=2, T=12),
    "vocab_67_C_20": Case(dict(n_layer=2, n_head=2, n_embd=20, vocab_size=67, block_size=10), B=2, T=7),
    "B_1": Case(dict(n_layer=3, n_head=2, n_embd=16, vocab_size=29, block_size=8), B=1, T=6),
    "ignored_targets": Case(dict(n_layer=1, n_head=2, n_embd=16, vocab_size=33, block_size=8),
                            B=3, T=8, ignore_fraction=0.3),
}


def random_batch(case, seed=1):
    rng = np.random.default_rng(seed)
    V = case.config["vocab_size"]
    idx = rng.integers(0, V, (case.B, case.T))
    targets = rng.integers(0, V, (case.B, case.T))
    targets[rng.random(targets.shape) < case.ignore_fraction] = -1
    targets.flat[0] = max(targets.flat[0], 0)   # at least one position has a loss
    return idx, targets


def assert_close_to_torch(errors, record_property=None):
    worst = max(errors, key=errors.get)
    print(f"worst relative error {errors[worst]:.2e} ({worst}); logits {errors['logits']:.2e}, "
          f"loss {errors['loss']:.2e}")
    if record_property is not None:
        record_property("worst_relative_error", f"{errors[worst]:.3e} ({worst})")
    too_far = {k: f"{v:.2e}" for k, v in errors.items() if not v <= TOLERANCE}
    assert not too_far, f"explorer differs from torch by more than {TOLERANCE}: {too_far}"


@pytest.mark.parametrize("name", CASES)
def test_logits_loss_and_every_gradient_match_torch(name, random_gpt, record_property):
    case = CASES[name]
    model = random_gpt(seed=len(name), **case.config)
    errors = golden_errors(model, *random_batch(case))
    assert len([k for k in errors if k.startswith("grad:")]) == len(model.params)
    assert_close_to_torch(errors, record_property)


def test_naive_loop_variants_match_torch(random_gpt, record_property):
    """The same golden check with the loop versions of matmul and attention swapped in."""
    case = CASES["vocab_67_C_20"]
    model = random_gpt(seed=3, **case.config)
    with kernels.use(matmul_forward="loops", matmul_backward="loops",
                     attention_forward="loops", attention_backward="loops"):
        errors = golden_errors(model, *random_batch(case, seed=5))
    assert_close_to_torch(errors, record_property)


def test_backward_overwrites_gradients(random_gpt):
    """forward + backward twice on one batch gives the same gradients, not twice them."""
    case = CASES["small"]
    model = random_gpt(**case.config)
    idx, targets = random_batch(case)
    model.forward(idx, targets)
    model.backward()
    first = {name: g.copy() for name, g in model.grads.items()}
    model.forward(idx, targets)
    model.backward()
    for name, g in model.grads.items():
        np.testing.assert_allclose(g, first[name], rtol=1e-6, atol=1e-9, err_msg=name)


def test_gradients_after_a_longer_batch_match_torch(random_gpt):
    """Every gradient is rewritten by each backward, even where a shorter batch does not
    reach: after T = block_size, a T = 3 batch must leave no stale rows in grads["wpe"]."""
    case = CASES["T_is_block_size"]
    model = random_gpt(**case.config)
    model.forward(*random_batch(case))
    model.backward()
    short = Case(case.config, B=2, T=3)
    assert_close_to_torch(golden_errors(model, *random_batch(short, seed=2)))


# ----------------------------------------------------------------------------- bad inputs
@pytest.fixture
def tiny(random_gpt):
    return random_gpt(n_layer=1, n_head=2, n_embd=8, vocab_size=10, block_size=4)


def test_float_token_ids_are_rejected(tiny):
    with pytest.raises(TypeError, match="integer"):
        tiny.forward(np.zeros((1, 3), np.float32))


@pytest.mark.parametrize("bad_id", [10, -1, 1000])
def test_token_ids_outside_the_vocabulary_are_rejected(tiny, bad_id):
    idx = np.array([[1, 2, bad_id]])
    with pytest.raises(ValueError, match=rf"token id {bad_id}\b.*outside the vocabulary"):
        tiny.forward(idx)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tiny.forward(np.array([[1, 2, 3]]), targets=np.array([[1, 2, 10]]))


def test_sequence_longer_than_block_size_is_rejected(tiny):
    with pytest.raises(ValueError, match=r"T=5 is longer than block_size=4"):
        tiny.forward(np.zeros((1, 5), np.int64))


def test_three_dimensional_ids_are_rejected(tiny):
    with pytest.raises(ValueError, match=r"shape \(B, T\).*\(1, 2, 3\)"):
        tiny.forward(np.zeros((1, 2, 3), np.int64))


def test_targets_of_another_shape_are_rejected(tiny):
    with pytest.raises(ValueError, match="must equal idx shape"):
        tiny.forward(np.zeros((2, 3), np.int64), np.zeros((2, 2), np.int64))


def test_backward_before_forward_is_rejected(tiny):
    with pytest.raises(RuntimeError, match="forward pass first"):
        tiny.backward()


def test_backward_without_targets_is_rejected(tiny):
    tiny.forward(np.zeros((1, 3), np.int64))
    with pytest.raises(RuntimeError, match="needs a loss"):
        tiny.backward()


def test_second_backward_for_one_forward_is_rejected(tiny):
    tiny.forward(np.zeros((1, 3), np.int64), np.ones((1, 3), np.int64))
    tiny.backward()
    with pytest.raises(RuntimeError, match="already called"):
        tiny.backward()


def test_n_embd_not_divisible_by_n_head_is_rejected():
    with pytest.raises(ValueError, match=r"n_embd \(10\) must be divisible by n_head \(3\)"):
        GPTConfig(n_layer=1, n_head=3, n_embd=10, vocab_size=10, block_size=4)
