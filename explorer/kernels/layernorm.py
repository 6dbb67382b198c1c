"""Layer normalisation over the channel dimension.

    mean = x.mean(), rstd = 1 / sqrt(x.var() + 1e-5)
    out = (x - mean) * rstd * weight + bias

Shapes: inp, out (B, T, C); weight, bias (C,); mean, rstd (B, T) are cached for the
backward pass. The compiled loops see N = B*T rows of C channels.
"""
import numpy as np
from numba import prange

from ._compile import flat, kernel, rows

EPS = np.float32(1e-5)


@kernel(parallel=True)
def _layernorm_forward_rows(out, mean, rstd, inp, weight, bias):
    N, C = inp.shape
    for n in prange(N):
        x = inp[n]
        m = np.float32(0.0)
        for i in range(C):
            m += x[i]
        m = m / C
        v = np.float32(0.0)
        for i in range(C):
            d = x[i] - m
            v += d * d
        s = np.float32(1.0) / np.sqrt(v / C + EPS)
        for i in range(C):
            out[n, i] = (x[i] - m) * s * weight[i] + bias[i]
        mean[n] = m
        rstd[n] = s


@kernel(parallel=True)
def _layernorm_backward_rows(dinp, dout, inp, weight, mean, rstd):
    N, C = inp.shape
    for n in prange(N):
        m, s = mean[n], rstd[n]
        # two reductions: mean of dnorm and mean of dnorm * norm
        dnorm_mean = np.float32(0.0)
        dnorm_norm_mean = np.float32(0.0)
        for i in range(C):
            norm = (inp[n, i] - m) * s
            dnorm = weight[i] * dout[n, i]
            dnorm_mean += dnorm
            dnorm_norm_mean += dnorm * norm
        dnorm_mean = dnorm_mean / C
        dnorm_norm_mean = dnorm_norm_mean / C
        for i in range(C):
            norm = (inp[n, i] - m) * s
            dnorm = weight[i] * dout[n, i]
            # d/dx of (x - mean) * rstd, with both mean and rstd depending on x
            dinp[n, i] = (dnorm - dnorm_mean - norm * dnorm_norm_mean) * s


@kernel
def _layernorm_backward_params(dweight, dbias, dout, inp, mean, rstd):
    N, C = inp.shape
    dweight[:] = 0.0
    dbias[:] = 0.0
    for n in range(N):
        m, s = mean[n], rstd[n]
        for i in range(C):
            # in the forward pass this was: out = norm * weight + bias
            dbias[i] += dout[n, i]
            dweight[i] += (inp[n, i] - m) * s * dout[n, i]


def layernorm_forward(out, mean, rstd, inp, weight, bias):
    _layernorm_forward_rows(rows(out), flat(mean), flat(rstd), rows(inp), weight, bias)


def layernorm_backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd):
    """Writes dinp (B, T, C), dweight (C,), dbias (C,)."""
    dout, inp, mean, rstd = rows(dout), rows(inp), flat(mean), flat(rstd)
    _layernorm_backward_rows(rows(dinp), dout, inp, weight, mean, rstd)
    _layernorm_backward_params(dweight, dbias, dout, inp, mean, rstd)
