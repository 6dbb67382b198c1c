"""Causal attention for the newest positions only, against the q, k, v of all earlier ones
(the KV cache): what sampling needs when it adds one token at a time.

    out[t] = softmax(q[t] k[:t+1]^T / sqrt(hs)) v[:t+1]     for the last Tn positions t

Shapes: qkv (B, n, 3C) holds positions 0..n-1, laid out [q | k | v] as attention_forward's
qkv (head h owns channels h*hs:(h+1)*hs of each); out (B, Tn, C) gets the rows of positions
n-Tn..n-1. A decode step has Tn = 1: its cost is O(n) per head, where running
attention_forward over all n positions again would recompute every earlier row, O(n^2). It
writes no (T, T) attention matrix and has no backward: sampling only reads the output.
The softmax is attention.py's `attention_softmax`, written once.
"""
import math

import numpy as np
from numba import prange

from ._compile import kernel
from .attention import attention_softmax


@kernel(parallel=True)
def _attention_decode(out, qkv, n_head):
    B, Tn, C = out.shape
    n = qkv.shape[1]
    hs = C // n_head
    scale = np.float32(1.0 / math.sqrt(hs))
    for row in prange(B * n_head * Tn):
        b, h, r = row // (n_head * Tn), (row // Tn) % n_head, row % Tn
        t = n - Tn + r                                  # the position this row belongs to
        q = qkv[b, t, h * hs:(h + 1) * hs]
        preatt = np.empty(t + 1, np.float32)
        for t2 in range(t + 1):                         # scores against every position so far
            k = qkv[b, t2, C + h * hs:C + (h + 1) * hs]
            s = np.float32(0.0)
            for i in range(hs):
                s += q[i] * k[i]
            preatt[t2] = s
        att = np.empty(t + 1, np.float32)
        attention_softmax(att, preatt, scale)
        o = out[b, r, h * hs:(h + 1) * hs]
        o[:] = 0.0
        for t2 in range(t + 1):                         # weighted sum of the values
            v = qkv[b, t2, 2 * C + h * hs:2 * C + (h + 1) * hs]
            a = att[t2]
            for i in range(hs):
                o[i] += a * v[i]


def attention_decode(out, qkv, n_head):
    """out (B, Tn, C): causal attention of the last Tn positions of qkv (B, n, 3C), n >= Tn."""
    if out.shape[1] > qkv.shape[1]:
        raise ValueError(f"attention_decode: out has {out.shape[1]} positions but qkv only "
                         f"{qkv.shape[1]}; out holds the last Tn <= n positions of qkv")
    _attention_decode(out, qkv, n_head)
