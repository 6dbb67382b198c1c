"""Sampling with the KV cache against full forward passes."""
import numpy as np
import pytest
from helpers import SPIED, randomize_params, spies

from explorer import GPT, GPTConfig, kernels
from explorer.model.generate import next_token_logits

CONFIG = GPTConfig(n_layer=2, n_head=4, n_embd=32, vocab_size=29, block_size=12)


@pytest.fixture(scope="module")
def model():
    return randomize_params(GPT(CONFIG), seed=3)


def greedy_by_full_forward(model, idx, n):
    """What nanoGPT does: run the whole (cropped) context every step and take the argmax."""
    out = idx
    for _ in range(n):
        logits, _ = model.forward(out[:, -CONFIG.block_size:])
        out = np.concatenate([out, logits[:, -1].argmax(-1)[:, None]], axis=1)
    return out


@pytest.mark.parametrize("prompt_len", [1, 5, 12])
def test_kv_cache_greedy_matches_full_forward(model, prompt_len):
    idx = np.random.default_rng(prompt_len).integers(0, CONFIG.vocab_size, (3, prompt_len))
    n = 20   # runs past block_size: the context gets cropped
    expected = greedy_by_full_forward(model, idx, n)
    np.testing.assert_array_equal(model.generate(idx, n, temperature=0), expected)
    np.testing.assert_array_equal(model.generate(idx, n, top_k=1, seed=5), expected)


def test_kv_cache_logits_match_forward(model):
    idx = np.random.default_rng(0).integers(0, CONFIG.vocab_size, (2, 9))
    last = next_token_logits(model, idx)
    logits, _ = model.forward(idx)
    np.testing.assert_allclose(last, logits[:, -1], rtol=1e-5, atol=1e-5)


def test_sampling_is_seeded_and_respects_top_k(model):
    idx = np.zeros((4, 1), np.int64)
    a = model.generate(idx, 15, temperature=1.5, top_k=3, seed=7)
    b = model.generate(idx, 15, temperature=1.5, top_k=3, seed=7)
    np.testing.assert_array_equal(a, b)
    # every sampled token is among the 3 most likely for its context
    for row in a:
        for t in range(1, len(row)):
            logits, _ = model.forward(row[None, max(0, t - CONFIG.block_size):t])
            assert row[t] in np.argsort(logits[0, -1])[-3:]


def test_generate_leaves_training_record_alone(model):
    idx = np.ones((1, 4), np.int64)
    model.forward(idx, idx)
    trace = model.trace
    model.generate(idx, 3)
    assert model.trace is trace


@pytest.mark.parametrize("kwargs, message", [
    ({"max_new_tokens": -1}, "max_new_tokens"),
    ({"max_new_tokens": 2, "temperature": -1.0}, "temperature"),
    ({"max_new_tokens": 2, "top_k": 0}, "top_k"),
])
def test_bad_generate_arguments(model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        model.generate(np.zeros((1, 2), np.int64), **kwargs)


def test_prompt_longer_than_block_size_is_refused(model):
    with pytest.raises(ValueError, match="block_size"):
        model.generate(np.zeros((1, CONFIG.block_size + 1), np.int64), 1)


# ----------------------------------------------------------------------------- through the registry
def test_every_op_of_a_decode_step_runs_the_registered_kernel(model):
    """Prompt of 3, 4 new tokens: one pass over the prompt, then 3 one-position steps (the 4th
    token needs no step after it), each calling every op of the model through the registry."""
    L, C, B = CONFIG.n_layer, CONFIG.n_embd, 2
    calls = []
    with kernels.use(**spies(calls)):
        model.generate(np.zeros((B, 3), np.int64), 4, temperature=0)
    # attention reads q, k, v of every position so far: 3 (the prompt), then 4, 5, 6
    assert [shape[1] for name, shape in calls if name == "attention_decode"] == \
        [3] * L + [4] * L + [5] * L + [6] * L
    one_position = {name: sum(1 for n, shape in calls if n == name and shape[:2] == (B, 1)) for name in SPIED}
    del one_position["attention_decode"]
    per_step = {"encoder_forward": 1, "layernorm_forward": 2 * L + 1, "matmul_forward": 4 * L + 1,
                "gelu_forward": L, "residual_forward": 2 * L}
    assert one_position == {name: 3 * n for name, n in per_step.items()}, \
        f"kernel calls on one position (3 decode steps expected) differ from {per_step} per step"
    assert ("gelu_forward", (B, 1, 4 * C)) in calls

    calls.clear()
    with kernels.use(**spies(calls)):
        next_token_logits(model, np.zeros((B, 5), np.int64))
    assert sorted({name for name, _ in calls}) == sorted(SPIED)
    assert {shape[:2] for _, shape in calls} == {(B, 5)}


def _negated(out, preatt, att, qkv, n_head):
    kernels.shipped("attention_forward")(out, preatt, att, qkv, n_head)
    out *= -1.0


def _negated_decode(out, qkv, n_head):
    kernels.shipped("attention_decode")(out, qkv, n_head)
    out *= -1.0


def _relu(out, inp):
    np.maximum(inp, 0.0, out=out)


def _shifted_layernorm(out, mean, rstd, inp, weight, bias):
    kernels.shipped("layernorm_forward")(out, mean, rstd, inp, weight, bias)
    out += 0.5


def _doubled_branch(out, inp1, inp2):
    np.add(inp1, 2.0 * inp2, out=out)


@pytest.mark.parametrize("name, wrong, in_forward", [
    ("attention_decode", _negated_decode, {"attention_forward": _negated}),
    ("gelu_forward", _relu, {}), ("layernorm_forward", _shifted_layernorm, {}),
    ("residual_forward", _doubled_branch, {})])
def test_a_swapped_kernel_is_the_one_that_samples(model, name, wrong, in_forward):
    """Sampling with a (deliberately wrong) swapped kernel gives what a full forward with that
    kernel gives (for attention_decode: with attention_forward swapped the same way), and not
    what the shipped kernel gives."""
    idx = np.random.default_rng(1).integers(0, CONFIG.vocab_size, (3, 4))
    shipped_logits = next_token_logits(model, idx)
    shipped_tokens = model.generate(idx, 10, temperature=0)
    with kernels.use(**{name: wrong, **in_forward}):
        swapped_logits = next_token_logits(model, idx)
        expected = greedy_by_full_forward(model, idx, 10)
        swapped_tokens = model.generate(idx, 10, temperature=0)
    assert np.abs(swapped_logits - shipped_logits).max() > 0.1, f"{name} swapped: the logits did not change"
    np.testing.assert_array_equal(swapped_tokens, expected)
    assert (swapped_tokens != shipped_tokens).any(), f"{name} swapped: the sampled tokens did not change"
