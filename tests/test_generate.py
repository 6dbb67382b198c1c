"""Sampling with the KV cache against full forward passes."""
import numpy as np
import pytest
from helpers import randomize_params

from explorer import GPT, GPTConfig

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
    from explorer.model.generate import next_token_logits
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
