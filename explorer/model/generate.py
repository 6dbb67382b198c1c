"""Sampling from the model, with a KV cache, through the same op list and kernels as training.

The prompt runs through the model once, all positions together. Then each new token runs it
on one position only: every op of model.ops (architecture.py) is called on that position,
through the kernel registry, as in training, so a kernel swapped with `kernels.register` or
`kernels.use` is the kernel that samples too. The one difference is attention, which needs
the earlier positions: their q, k, v are kept per layer (the cache), and the registry's
`attention_decode` (kernels/attention_decode.py) computes the new positions' rows against
them: O(t) work per new token and head, where attention_forward over all t positions would
recompute every earlier row, O(t^2). Swap `attention_decode` to change how sampling attends.
Nothing of the model's training record (model.acts, model.trace) is touched.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from .. import kernels
from .architecture import activation_shapes

if TYPE_CHECKING:
    from .gpt import GPT


class KVCache:
    """q, k, v of the positions 0..length-1 of every attention op, by op name: (B, capacity, 3C)
    each, as the op's qkv activation holds them (queries too: the kernel takes all three)."""

    def __init__(self, batch_size: int, capacity: int):
        self.batch_size, self.capacity = batch_size, capacity
        self.qkv: dict[str, np.ndarray] = {}
        self.length = 0
        self.shapes: dict[int, dict] = {}   # T -> activation shapes of a run on T positions


def _attend(cache, name, qkv, n_head):
    """Appends qkv (B, T, 3C) of the new positions to the cache of attention op `name`;
    returns their rows of out (B, T, C), from the registry's attention_decode."""
    B, T, C3 = qkv.shape
    start, n = cache.length, cache.length + T
    if name not in cache.qkv:
        cache.qkv[name] = np.zeros((B, cache.capacity, C3), np.float32)
    cache.qkv[name][:, start:n] = qkv
    out = np.empty((B, T, C3 // 3), np.float32)
    kernels.get("attention_decode")(out, cache.qkv[name][:, :n], n_head)
    return out


def _run_positions(model, cache, tokens):
    """The model on tokens (B, T) at positions cache.length.., appending them to the cache:
    model.ops top to bottom, each kernel looked up in the registry now. Returns the logits
    (B, V) of the last position."""
    tokens = np.ascontiguousarray(tokens, dtype=np.int64)
    B, T = tokens.shape
    start = cache.length
    if T not in cache.shapes:   # computed once per generate for the one-position steps
        cache.shapes[T] = activation_shapes(model.ops, model.config, B, T)
    shapes = cache.shapes[T]
    tensors = {**model.params, "idx": tokens}
    for op in model.ops:
        inputs = {arg: tensors[x] if isinstance(x, str) else x for arg, x in op.inputs.items()}
        if op.kernel == "attention_forward":      # the new positions attend to the cached ones too
            tensors[op.outputs["out"]] = _attend(cache, op.name, inputs["qkv"], inputs["n_head"])
            continue
        if op.kernel == "encoder_forward":        # position embeddings of positions start..start+T-1
            inputs["wpe"] = inputs["wpe"][start:start + T]
        outputs = {arg: np.empty(shapes[x], np.float32) for arg, x in op.outputs.items()}
        kernels.get(op.kernel)(*outputs.values(), *inputs.values())
        tensors.update({op.outputs[arg]: array for arg, array in outputs.items()})
    cache.length += T
    return tensors["logits"][:, -1]


def sample_next(logits: np.ndarray, temperature: float, top_k: int | None,
                rng: np.random.Generator) -> np.ndarray:
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


def _prefill(model, tokens, capacity):
    """A fresh cache holding tokens (B, T); returns (cache, logits (B, V) of the last position)."""
    cache = KVCache(tokens.shape[0], capacity)
    return cache, _run_positions(model, cache, tokens)


def next_token_logits(model: GPT, idx: ArrayLike) -> np.ndarray:
    """Logits (B, V) of the token after each row of idx (B, T), leaving the model's
    training record (model.acts, model.trace) untouched."""
    idx = model._check_tokens(idx, "idx")
    with model.lock:
        return _prefill(model, idx, idx.shape[1])[1]


def generate(model: GPT, idx: ArrayLike, max_new_tokens: int, temperature: float = 1.0,
             top_k: int | None = None, seed: int | None = None) -> np.ndarray:
    """Continue each row of idx (B, T) by max_new_tokens tokens sampled at `temperature`
    (0: the most likely) among the top_k most likely (None: all). Returns (B, T + max_new_tokens)."""
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
    with model.lock:
        cache, logits = _prefill(model, idx, min(block, idx.shape[1] + max_new_tokens))
        for i in range(max_new_tokens):
            nxt = sample_next(logits, temperature, top_k, rng)
            out = np.concatenate([out, nxt[:, None]], axis=1)
            if i == max_new_tokens - 1:
                break
            if cache.length == block:
                # positions are learned only up to block_size: start over on the last block-1
                # tokens (what a full forward on the cropped context would see)
                cache, _ = _prefill(model, out[:, -block:-1], block)
            logits = _run_positions(model, cache, nxt[:, None])
    return out
