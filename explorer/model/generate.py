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

`Decoder` is that loop's state, public: a prompt prefilled once, then one token per step
(what SamplingView's "Next token" does); `generate` samples through one.
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
    if T not in cache.shapes:   # computed once per cache for the one-position steps
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


#: how many parameters a decoder samples to notice that the weights changed (a training step
#: moves every weight, so a sample notices it; an edit of a few weights can slip through)
FINGERPRINT_SIZE = 65_536


class Decoder:
    """A decode session: the prompt runs through the model once, then each step() adds one
    token per row and runs the model on that position only, against the KV cache.

        session = model.decoder(prompt_ids)        # (B, T) or (T,): prefills once
        session.logits                             # (B, V): what comes after the last token
        session.step(next_ids)                     # (B,): one token per row -> new logits
        session.tokens                             # (B, length): what the cache holds
        session.reset()                            # back to the prompt (or reset(new_prompt))

    Every op runs through the kernel registry, as generate() does (it is built on this). The
    cache has room for `capacity` positions (default and at most block_size: the model learned
    no position past it); a step beyond it raises, unless step(..., slide=True), which starts
    over on the last capacity tokens (a prefill of all of them). The cache holds keys and
    values of the weights and kernels in use at the prefill: if either changes (a training
    step, kernels.register), step() raises until reset(). model.acts / model.trace are not
    touched."""

    def __init__(self, model: GPT, prompt_ids: ArrayLike, capacity: int | None = None) -> None:
        block = model.config.block_size
        capacity = block if capacity is None else capacity
        if not isinstance(capacity, (int, np.integer)) or not 1 <= capacity <= block:
            raise ValueError(f"capacity must be an integer in [1, block_size={block}] (positions "
                             f"the cache holds), got {capacity!r}")
        self.model, self.capacity = model, int(capacity)
        self.reset(prompt_ids)

    def reset(self, prompt_ids: ArrayLike | None = None) -> np.ndarray:
        """A fresh cache holding prompt_ids (default: the prompt given last), with the model's
        weights and kernels as they are now; returns the logits (B, V) after its last token."""
        if prompt_ids is not None:
            prompt = self.model._check_tokens(prompt_ids, "prompt_ids")
            if prompt.shape[1] > self.capacity:
                raise ValueError(f"the prompt has {prompt.shape[1]} tokens, more than this "
                                 f"decoder's capacity of {self.capacity} positions")
            self.prompt = prompt
        B, T = self.prompt.shape
        with self.model.lock:
            self._tokens = np.zeros((B, self.capacity), np.int64)
            self._cache = KVCache(B, self.capacity)
            self._made_with = self._model_state()
            self._append(self.prompt)
        return self.logits

    @property
    def tokens(self) -> np.ndarray:
        """(B, length): the tokens whose keys and values the cache holds, oldest first."""
        return self._tokens[:, :self._cache.length]

    @property
    def length(self) -> int:
        return self._cache.length

    def step(self, token_ids: ArrayLike, slide: bool = False) -> np.ndarray:
        """Append one token per row, token_ids (B,) or (B, 1), and return the logits (B, V)
        after it, from a run of the model on that one position. slide=True: when the cache is
        full, keep the last capacity - 1 tokens and this one (a prefill of capacity positions)."""
        ids = np.asarray(token_ids)
        B = self.prompt.shape[0]
        if ids.shape not in ((B,), (B, 1)):
            raise ValueError(f"step takes one token per row: shape ({B},) or ({B}, 1), got {ids.shape}")
        ids = self.model._check_tokens(ids.reshape(B, 1), "token_ids")
        with self.model.lock:
            if not self.is_current():
                raise RuntimeError("the model's weights or kernels changed since this decoder's "
                                   "prefill: its cached keys and values belong to the old model; "
                                   "call reset() (or reset(tokens)) to read the context again")
            if self.length == self.capacity:
                if not slide:
                    raise ValueError(
                        f"the decoder is full: it holds {self.capacity} positions (capacity; "
                        f"block_size={self.model.config.block_size}) and positions past "
                        f"block_size have no embedding; step(..., slide=True) drops the oldest "
                        f"token, or reset() starts over")
                window = np.concatenate([self.tokens[:, 1:], ids], axis=1)
                self._cache = KVCache(B, self.capacity)
                return self._append(window)
            return self._append(ids)

    def is_current(self) -> bool:
        """False once the weights (sampled: FINGERPRINT_SIZE of them) or the registry's kernels
        differ from those of the prefill."""
        return self._model_state() == self._made_with

    def _model_state(self):
        flat = self.model.flat_params
        stride = max(1, flat.size // FINGERPRINT_SIZE)
        kernel_names = {op.kernel for op in self.model.ops} | {"attention_decode"}
        return (flat[::stride].tobytes(), tuple(kernels.get(name) for name in sorted(kernel_names)))

    def _append(self, tokens):
        start = self._cache.length
        self.logits = _run_positions(self.model, self._cache, tokens)
        self._tokens[:, start:self._cache.length] = tokens
        return self.logits


def next_token_logits(model: GPT, idx: ArrayLike) -> np.ndarray:
    """Logits (B, V) of the token after each row of idx (B, T), leaving the model's
    training record (model.acts, model.trace) untouched."""
    idx = model._check_tokens(idx, "idx")
    return Decoder(model, idx, capacity=idx.shape[1]).logits


def generate(model: GPT, idx: ArrayLike, max_new_tokens: int, temperature: float = 1.0,
             top_k: int | None = None, seed: int | None = None) -> np.ndarray:
    """Continue each row of idx (B, T) by max_new_tokens tokens sampled at `temperature`
    (0: the most likely) among the top_k most likely (None: all). Returns (B, T + max_new_tokens).
    Past block_size the context slides: each token then sees the last block_size before it."""
    idx = model._check_tokens(idx, "idx")
    if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be a non-negative integer, got {max_new_tokens!r}")
    if temperature < 0 or not math.isfinite(temperature):
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k is not None and (not isinstance(top_k, (int, np.integer)) or top_k < 1):
        raise ValueError(f"top_k must be a positive integer or None, got {top_k!r}")
    rng = np.random.default_rng(seed)
    new = np.zeros((idx.shape[0], max_new_tokens), np.int64)
    with model.lock:
        session = Decoder(model, idx, min(model.config.block_size, idx.shape[1] + max_new_tokens))
        for i in range(max_new_tokens):
            new[:, i] = sample_next(session.logits, temperature, top_k, rng)
            if i < max_new_tokens - 1:
                session.step(new[:, i], slide=True)
    return np.concatenate([idx, new], axis=1)
