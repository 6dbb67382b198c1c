"""Induction scores: how much each head attends to the token after the previous occurrence
of the current token ("... A B ... A -> look at B", the pattern that copies B).

    tokens = repeated_tokens(rng, batch=8, length=20, vocab_size=V)   # a run, then the run again
    cache = cache_activations(model, tokens)
    scores = [induction_scores(att, tokens) for att in cache.layers("attn.att")]   # (NH,) each
    scores = head_induction_scores(model, tokens)                 # the same, (n_layer, NH), one call

A perfect induction head scores 1; a head spreading its attention evenly over the t + 1
positions it may see scores about the mean of 1 / (t + 1) over the repeated positions.
"""
from __future__ import annotations

import numpy as np

from ..model.gpt import GPT
from .cache import cache_activations


def induction_scores(att: np.ndarray, tokens: np.ndarray, *, target_offset: int = 1,
                     most_recent: bool = True, every_position: bool = False) -> np.ndarray:
    """(NH,): the mean over the positions (b, t) whose token occurred earlier in row b, at
    position s (the most recent such), of att[b, :, t, s + 1]. att (B, NH, T, T), tokens (B, T).

    The keyword arguments give the usual wrong versions, which the course recognises: the
    earlier occurrence itself (target_offset=0), the first occurrence (most_recent=False),
    or dividing by every position (every_position=True)."""
    att, tokens = np.asarray(att), np.asarray(tokens)
    if att.ndim != 4 or att.shape[2] != att.shape[3]:
        raise ValueError(f"att must be attention probabilities of shape (B, NH, T, T), got "
                         f"shape {att.shape}")
    B, NH, T, _ = att.shape
    if tokens.shape != (B, T):
        raise ValueError(f"tokens must have shape (B, T) = {(B, T)} to match att of shape "
                         f"{att.shape}, got shape {tokens.shape}")
    total, count = np.zeros(NH), 0
    for b in range(B):
        seen = {}                        # token -> the position it was (last) seen at
        for t in range(T):
            s = seen.get(tokens[b, t])
            if s is not None:
                total += att[b, :, t, s + target_offset]
                count += 1
            if most_recent or tokens[b, t] not in seen:
                seen[tokens[b, t]] = t
    if count == 0:
        raise ValueError(f"no token repeats within a row of tokens (shape {tokens.shape}): the "
                         f"induction score averages over repeated tokens, so it needs at least one")
    return total / (B * T if every_position else count)


def repeated_tokens(rng: np.random.Generator, batch: int, length: int, vocab_size: int) -> np.ndarray:
    """(batch, 2 * length) int64: each row a run of `length` distinct random tokens, then the
    same run again. Every token of the second half occurred exactly `length` positions before,
    so an induction head at position t attends to t - length + 1."""
    if not 1 <= length <= vocab_size:
        raise ValueError(f"a run of length {length} with distinct tokens needs 1 <= length <= "
                         f"vocab_size={vocab_size}")
    runs = np.stack([rng.choice(vocab_size, size=length, replace=False) for _ in range(batch)])
    return np.concatenate([runs, runs], axis=1).astype(np.int64)


def head_induction_scores(model: GPT, tokens: np.ndarray) -> np.ndarray:
    """(n_layer, NH): the induction score of every head of `model` on tokens (B, T), e.g.
    repeated_tokens(...). One forward; the attention of one layer at a time is scored."""
    tokens = np.atleast_2d(np.asarray(tokens))
    names = [f"blocks.{l}.attn.att" for l in range(model.config.n_layer)]
    cache = cache_activations(model, tokens, names=names)
    return np.stack([induction_scores(cache[name], tokens) for name in names])
