"""Token + position embedding: the first op of GPT-2.

    out[b, t, :] = wte[idx[b, t], :] + wpe[t, :]

Shapes: idx (B, T) int, wte (V, C), wpe (maxT, C), out (B, T, C).
"""
from numba import prange

from ._compile import kernel


@kernel(parallel=True)
def encoder_forward(out, idx, wte, wpe):
    B, T, C = out.shape
    for bt in prange(B * T):
        b, t = bt // T, bt % T
        token = idx[b, t]
        for i in range(C):
            out[b, t, i] = wte[token, i] + wpe[t, i]


@kernel
def encoder_backward(dwte, dwpe, dout, idx):
    """Writes dwpe; ACCUMULATES into dwte (the token embedding is tied to the LM head,
    whose gradient is already in dwte; and one token may appear at many positions).
    Serial on purpose: two positions with the same token would race on dwte[token]."""
    B, T, C = dout.shape
    dwpe[:] = 0.0
    for b in range(B):
        for t in range(T):
            token = idx[b, t]
            for i in range(C):
                # in the forward pass this was: out[b, t, i] = wte[token, i] + wpe[t, i]
                dwte[token, i] += dout[b, t, i]
                dwpe[t, i] += dout[b, t, i]
