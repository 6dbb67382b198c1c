"""Fully connected layer: out = inp @ weight.T + bias.

Shapes: inp (B, T, C), weight (OC, C) (PyTorch's nn.Linear layout, as in llm.c),
bias (OC,) or None, out (B, T, OC). Inside, (B, T) are flattened to N = B*T rows.

Two versions, as llm.c's dev/cuda keeps numbered kernels side by side:
- `matmul_forward` / `matmul_backward` (the default) hand the products to the BLAS
  library NumPy ships (OpenBLAS): decades of tuning, ~90% of the CPU's peak.
- `matmul_forward_loops` / `matmul_backward_loops` spell the same arithmetic out in Numba
  loops, for reading and for the kernel lab. Select them with
  `kernels.use(matmul_forward=matmul_forward_loops, matmul_backward=matmul_backward_loops)`.
- `matmul_backward2` (variant "blas2"): the default, but the weight gradient dout.T @ inp on one
  BLAS thread. Small transposed products like it (OC x N by N x C, N = B*T) ran at 1-6 GFLOP/s
  on 2 OpenBLAS threads when another process shared the 2 cores, ~95 on one (issue 18,
  benchmarks/README.md); on an idle machine what it buys is not measured yet.
"""
import numpy as np
from numba import prange

from ._compile import kernel, rows


@kernel(parallel=True)
def add_bias(out, bias):
    """out[n, :] += bias, rows split across threads."""
    N, OC = out.shape
    for n in prange(N):
        for o in range(OC):
            out[n, o] += bias[o]


@kernel(parallel=True)
def bias_gradient(dbias, dout):
    """dbias[o] = sum_n dout[n, o]; each thread sums a block of rows, then blocks are added."""
    N, OC = dout.shape
    blocks = 8
    partial = np.zeros((blocks, OC), np.float32)
    for blk in prange(blocks):
        for n in range(blk * N // blocks, (blk + 1) * N // blocks):
            for o in range(OC):
                partial[blk, o] += dout[n, o]
    for o in range(OC):
        dbias[o] = 0.0
    for blk in range(blocks):
        for o in range(OC):
            dbias[o] += partial[blk, o]


def matmul_forward(out, inp, weight, bias):
    out, inp = rows(out), rows(inp)
    np.matmul(inp, weight.T, out=out)
    if bias is not None:
        add_bias(out, bias)


def matmul_backward(dinp, dweight, dbias, dout, inp, weight):
    """Writes dinp (B, T, C), dweight (OC, C), dbias (OC,)."""
    dinp, dout, inp = rows(dinp), rows(dout), rows(inp)
    # in the forward pass this was: out[n, o] = sum_c inp[n, c] * weight[o, c] + bias[o]
    np.matmul(dout, weight, out=dinp)
    np.matmul(dout.T, inp, out=dweight)
    if dbias is not None:
        bias_gradient(dbias, dout)


def matmul_backward2(dinp, dweight, dbias, dout, inp, weight):
    """matmul_backward, with the weight gradient's product on one BLAS thread."""
    from .runtime import blas_threads

    dinp, dout, inp = rows(dinp), rows(dout), rows(inp)
    np.matmul(dout, weight, out=dinp)
    with blas_threads(1):
        np.matmul(dout.T, inp, out=dweight)
    if dbias is not None:
        bias_gradient(dbias, dout)


@kernel(parallel=True)
def _matmul_forward_loops(out, inp, weight, bias, has_bias):
    N, C = inp.shape
    OC = weight.shape[0]
    for n in prange(N):
        for o in range(OC):
            acc = bias[o] if has_bias else np.float32(0.0)
            for c in range(C):
                acc += inp[n, c] * weight[o, c]
            out[n, o] = acc


@kernel(parallel=True)
def _matmul_backward_loops(dinp, dweight, dbias, dout, inp, weight, has_bias):
    N, C = inp.shape
    OC = weight.shape[0]
    # dinp[n, c] = sum_o dout[n, o] * weight[o, c]
    for n in prange(N):
        for c in range(C):
            dinp[n, c] = 0.0
        for o in range(OC):
            d = dout[n, o]
            for c in range(C):
                dinp[n, c] += d * weight[o, c]
    # dweight[o, c] = sum_n dout[n, o] * inp[n, c];  dbias[o] = sum_n dout[n, o]
    for o in prange(OC):
        for c in range(C):
            dweight[o, c] = 0.0
        db = np.float32(0.0)
        for n in range(N):
            d = dout[n, o]
            db += d
            for c in range(C):
                dweight[o, c] += d * inp[n, c]
        if has_bias:
            dbias[o] = db


def matmul_forward_loops(out, inp, weight, bias):
    has_bias = bias is not None
    _matmul_forward_loops(rows(out), rows(inp), weight, bias if has_bias else weight[0], has_bias)


def matmul_backward_loops(dinp, dweight, dbias, dout, inp, weight):
    has_bias = dbias is not None
    _matmul_backward_loops(rows(dinp), dweight, dbias if has_bias else dweight[0], rows(dout), rows(inp),
                           weight, has_bias)
