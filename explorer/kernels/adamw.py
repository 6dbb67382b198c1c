"""AdamW: Adam with decoupled weight decay (Loshchilov & Hutter), as torch.optim.AdamW.

For each parameter p with gradient g (already scaled by the clipping factor):
    m = beta1 m + (1 - beta1) g
    v = beta2 v + (1 - beta2) g^2
    p -= lr * weight_decay * p                      (only where decay is on: 2-D weights)
    p -= lr * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)

All parameters live in one flat buffer; `segments` (S+1,) are the offsets of the named
parameters in it and `decay` (S,) says which of them get weight decay. One call updates
everything, so an interrupt can never leave half the parameters updated.
"""
import numpy as np
from numba import prange

from ._compile import kernel


@kernel(parallel=True)
def adamw_update(params, grads, m, v, segments, decay, step, lr, beta1, beta2, eps,
                 weight_decay, grad_scale):
    """`step` counts from 1. Arrays are flat float32; scalars are floats."""
    bias1 = 1.0 - beta1 ** step
    bias2 = 1.0 - beta2 ** step
    step_size = np.float32(lr / bias1)
    inv_sqrt_bias2 = np.float32(1.0 / np.sqrt(bias2))
    b1, b2, e, gs = np.float32(beta1), np.float32(beta2), np.float32(eps), np.float32(grad_scale)
    one = np.float32(1.0)
    for s in range(len(decay)):
        shrink = np.float32(1.0 - lr * weight_decay) if decay[s] else one
        # this parameter's part of each buffer, as views indexed from 0: with an index like
        # segments[s] + i, Numba must allow for Python's negative indices, and that check
        # stops the loop from vectorising (measured: 4x slower on GPT-2 124M).
        # One view per line: numba 0.68 lost the writes through views unpacked from a tuple.
        lo = segments[s]
        hi = segments[s + 1]
        p = params[lo:hi]
        g = grads[lo:hi]
        ms = m[lo:hi]
        vs = v[lo:hi]
        for i in prange(p.size):
            gi = g[i] * gs
            ms[i] = b1 * ms[i] + (one - b1) * gi
            vs[i] = b2 * vs[i] + (one - b2) * gi * gi
            p[i] = p[i] * shrink - step_size * ms[i] / (np.sqrt(vs[i]) * inv_sqrt_bias2 + e)


@kernel(parallel=True)
def count_nonfinite(x):
    """How many entries of a flat float32 buffer are NaN or +-Inf. The trainer runs it over
    the parameters after every update: one read of the buffer, under 1% of a step."""
    count = 0
    for i in prange(x.size):
        if not np.isfinite(x[i]):
            count += 1
    return count
