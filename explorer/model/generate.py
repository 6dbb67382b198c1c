"""Sampling from the model, one token at a time, with a KV cache.

Each new token runs the model on one position only: its key and value are appended to
the cache of every layer and its query attends over all cached positions. The work per
token is then O(T) instead of O(T^2), and nothing of the model's training record
(model.acts, model.trace) is touched.
"""
import math

import numpy as np

from .. import kernels
from ..kernels.runtime import compute_lock


class KVCache:
    """Keys and values of every layer for positions 0..length-1: (L, B, NH, maxT, hs) each."""

    def __init__(self, config, batch_size):
        shape = (config.n_layer, batch_size, config.n_head, config.block_size, config.head_size)
        self.k = np.zeros(shape, np.float32)
        self.v = np.zeros(shape, np.float32)
        self.length = 0


def _decode_position(model, cache, tokens):
    """Run one position for the batch: tokens (B,) at position cache.length. Returns logits (B, V)."""
    cfg, p = model.config, model.params
    B, C, NH, hs = len(tokens), cfg.n_embd, cfg.n_head, cfg.head_size
    t = cache.length
    k = kernels.get
    x = np.empty((B, 1, C), np.float32)
    k("encoder_forward")(x, tokens.reshape(B, 1), p["wte"], p["wpe"][t:t + 1])
    h = np.empty_like(x)
    mean, rstd = np.empty((B, 1), np.float32), np.empty((B, 1), np.float32)
    qkv = np.empty((B, 1, 3 * C), np.float32)
    y = np.empty_like(x)
    fc = np.empty((B, 1, 4 * C), np.float32)
    gelu = np.empty_like(fc)
    for l in range(cfg.n_layer):
        b = f"blocks.{l}."
        k("layernorm_forward")(h, mean, rstd, x, p[b + "ln1.weight"], p[b + "ln1.bias"])
        k("matmul_forward")(qkv, h, p[b + "attn.qkv.weight"], p[b + "attn.qkv.bias"])
        q = qkv[:, 0, :C].reshape(B, NH, hs)
        cache.k[l, :, :, t] = qkv[:, 0, C:2 * C].reshape(B, NH, hs)
        cache.v[l, :, :, t] = qkv[:, 0, 2 * C:].reshape(B, NH, hs)
        keys, values = cache.k[l, :, :, :t + 1], cache.v[l, :, :, :t + 1]  # (B, NH, t+1, hs)
        scores = np.einsum("bhd,bhsd->bhs", q, keys) / np.float32(math.sqrt(hs))
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        att = scores / scores.sum(axis=-1, keepdims=True)
        y[:, 0] = np.einsum("bhs,bhsd->bhd", att, values).reshape(B, C)
        attn_proj = np.empty_like(x)
        k("matmul_forward")(attn_proj, y, p[b + "attn.proj.weight"], p[b + "attn.proj.bias"])
        x = x + attn_proj
        k("layernorm_forward")(h, mean, rstd, x, p[b + "ln2.weight"], p[b + "ln2.bias"])
        k("matmul_forward")(fc, h, p[b + "mlp.fc.weight"], p[b + "mlp.fc.bias"])
        k("gelu_forward")(gelu, fc)
        mlp_proj = np.empty_like(x)
        k("matmul_forward")(mlp_proj, gelu, p[b + "mlp.proj.weight"], p[b + "mlp.proj.bias"])
        x = x + mlp_proj
    k("layernorm_forward")(h, mean, rstd, x, p["ln_f.weight"], p["ln_f.bias"])
    logits = np.empty((B, 1, cfg.vocab_size), np.float32)
    k("matmul_forward")(logits, h, p["wte"], None)
    cache.length += 1
    return logits[:, 0]


def sample_next(logits, temperature, top_k, rng):
    """Token ids (B,) drawn from logits (B, V) at the given temperature, among the top_k."""
    if temperature == 0:
        return logits.argmax(axis=-1)
    logits = logits.astype(np.float64) / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = np.partition(logits, -top_k, axis=-1)[:, -top_k][:, None]
        logits = np.where(logits < kth, -np.inf, logits)
    probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)
    return np.array([rng.choice(len(row), p=row) for row in probs])


def _prefill(model, tokens):
    """A fresh cache holding tokens (B, T); returns (cache, logits of the last position)."""
    cache = KVCache(model.config, tokens.shape[0])
    for t in range(tokens.shape[1]):
        logits = _decode_position(model, cache, tokens[:, t])
    return cache, logits


def next_token_logits(model, idx):
    """Logits (B, V) of the token after each row of idx (B, T), leaving the model's
    training record (model.acts, model.trace) untouched."""
    idx = model._check_tokens(idx, "idx")
    with compute_lock:
        return _prefill(model, idx)[1]


def generate(model, idx, max_new_tokens, temperature=1.0, top_k=None, seed=None):
    idx = model._check_tokens(idx, "idx")
    if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be a non-negative integer, got {max_new_tokens!r}")
    if temperature < 0 or not math.isfinite(temperature):
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k is not None and (not isinstance(top_k, (int, np.integer)) or top_k < 1):
        raise ValueError(f"top_k must be a positive integer or None, got {top_k!r}")
    rng = np.random.default_rng(seed)
    block = model.config.block_size
    out = idx
    with compute_lock:
        cache, logits = _prefill(model, idx)
        for _ in range(max_new_tokens):
            nxt = sample_next(logits, temperature, top_k, rng)
            out = np.concatenate([out, nxt[:, None]], axis=1)
            if cache.length == block:
                # positions are learned only up to block_size: start over on the last block-1
                # tokens (what a full forward on the cropped context would see)
                cache, _ = _prefill(model, out[:, -block:-1])
            logits = _decode_position(model, cache, nxt)
    return out
