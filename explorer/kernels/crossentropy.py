"""Fused softmax + cross-entropy over the vocabulary.

    probs[n, :] = softmax(logits[n, :])
    losses[n] = -log(probs[n, targets[n]])

Shapes: logits, probs (B, T, V); targets (B, T) int; losses (B, T). The compiled loops
see N = B*T rows.
Fusing them makes the backward one line: d loss / d logits = probs - onehot(target).
A negative target (-1) marks a position that does not count: its loss and gradient are 0.
"""
import numpy as np
from numba import prange

from ._compile import flat, kernel, rows
from ._math import exp32


@kernel(parallel=True)
def _crossentropy_forward_rows(losses, probs, logits, targets):
    N, V = logits.shape
    for n in prange(N):
        x = logits[n]
        maxval = x[0]
        for i in range(1, V):
            maxval = max(maxval, x[i])
        total = np.float32(0.0)
        for i in range(V):
            e = exp32(x[i] - maxval)
            probs[n, i] = e
            total += e
        inv = np.float32(1.0) / total
        for i in range(V):
            probs[n, i] *= inv
        # log-sum-exp form: exact even when probs underflows to 0
        if targets[n] >= 0:
            losses[n] = np.log(total) + maxval - x[targets[n]]
        else:
            losses[n] = 0.0


@kernel(parallel=True)
def _crossentropy_softmax_backward_rows(dlogits, dlosses, probs, targets):
    """Writes dlogits (N, V), given dlosses (N,) = d loss / d losses[n]."""
    N, V = probs.shape
    for n in prange(N):
        d = dlosses[n] if targets[n] >= 0 else np.float32(0.0)
        for i in range(V):
            dlogits[n, i] = probs[n, i] * d
        # in the forward pass this was: losses[n] = -log(probs[n, targets[n]])
        if targets[n] >= 0:
            dlogits[n, targets[n]] -= d


@kernel(parallel=True)
def _softmax_forward_rows(probs, logits):
    """probs = softmax(logits) row-wise, without a loss (used when there are no targets)."""
    N, V = logits.shape
    for n in prange(N):
        maxval = logits[n, 0]
        for i in range(1, V):
            maxval = max(maxval, logits[n, i])
        total = np.float32(0.0)
        for i in range(V):
            e = exp32(logits[n, i] - maxval)
            probs[n, i] = e
            total += e
        for i in range(V):
            probs[n, i] /= total


def crossentropy_forward(losses, probs, logits, targets):
    _crossentropy_forward_rows(flat(losses), rows(probs), rows(logits), flat(targets))


def crossentropy_softmax_backward(dlogits, dlosses, probs, targets):
    """Writes dlogits (B, T, V), given dlosses (B, T) = d loss / d losses[b, t]."""
    _crossentropy_softmax_backward_rows(rows(dlogits), flat(dlosses), rows(probs), flat(targets))


def softmax_forward(probs, logits):
    """probs = softmax(logits) over the last axis, without a loss."""
    _softmax_forward_rows(rows(probs), rows(logits))
