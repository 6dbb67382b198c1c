"""Causal multi-head self-attention (without the projections around it).

    q, k, v = split(qkv)                         # each (B, NH, T, hs), hs = C / NH
    preatt = q @ k^T                             # (B, NH, T, T) raw attention scores
    att = softmax(preatt / sqrt(hs), t2 <= t)    # (B, NH, T, T) probabilities, causal
    out = att @ v                                # (B, NH, T, hs) -> (B, T, C)

Shapes: qkv (B, T, 3C) laid out as [q | k | v] on the last axis, head h owning channels
h*hs:(h+1)*hs of each; out (B, T, C); preatt, att (B, NH, T, T) are kept for backward
and for the attention views (att is 0 above the diagonal; preatt there is unused).

Three versions, side by side as in llm.c's dev/cuda (select with kernels.use or
kernels.register("attention_forward", "blas")):
- `attention_forward` / `attention_backward` (default, "fused"): one thread per (batch,
  head) does everything for it, on private copies of its q, k, v laid out so the inner
  loops run over contiguous memory (and vectorise); the masked half is skipped.
- `attention_forward_blas` / `attention_backward_blas`: the four matrix products go to
  BLAS through NumPy, masked half included; only the softmax is our own loop. As fast on
  an idle machine, but it makes thousands of small multi-threaded BLAS calls per step,
  and each one waits whenever another program holds a core (measured: 3-5x slower under
  load, e.g. a browser rendering the dashboard).
- `attention_forward_loops` / `attention_backward_loops`: plain loops, llm.c style,
  straight over qkv. The easiest to read; slower.
"""
import math

import numpy as np
from numba import prange

from ._math import exp32
from ._compile import kernel


def _heads(qkv, n_head):
    """Views q, k, v of qkv (B, T, 3C) as (B, NH, T, hs) each, without copying."""
    B, T, C3 = qkv.shape
    hs = C3 // 3 // n_head
    qkv5 = qkv.reshape(B, T, 3, n_head, hs)
    return [qkv5[:, :, i].transpose(0, 2, 1, 3) for i in range(3)]


@kernel(parallel=True)
def causal_softmax_forward(att, preatt, scale):
    """att[b, h, t, :t+1] = softmax(scale * preatt[b, h, t, :t+1]); att[..., t+1:] = 0."""
    B, NH, T, _ = att.shape
    for row in prange(B * NH * T):
        b, h, t = row // (NH * T), (row // T) % NH, row % T
        x = preatt[b, h, t]
        y = att[b, h, t]
        maxval = x[0]
        for t2 in range(1, t + 1):
            maxval = max(maxval, x[t2])
        total = np.float32(0.0)
        for t2 in range(t + 1):
            e = exp32(scale * (x[t2] - maxval))
            y[t2] = e
            total += e
        inv = np.float32(1.0) / total
        for t2 in range(t + 1):
            y[t2] *= inv
        for t2 in range(t + 1, T):
            y[t2] = 0.0


@kernel(parallel=True)
def causal_softmax_backward(dpreatt, datt, att, scale):
    """dpreatt = d loss / d preatt, given datt = d loss / d att (writes, may alias datt)."""
    B, NH, T, _ = att.shape
    for row in prange(B * NH * T):
        b, h, t = row // (NH * T), (row // T) % NH, row % T
        a = att[b, h, t]
        da = datt[b, h, t]
        dot = np.float32(0.0)
        for t2 in range(t + 1):
            dot += a[t2] * da[t2]
        # in the forward pass this was: a = softmax(scale * x)
        # so dx[t2] = scale * a[t2] * (da[t2] - sum_j a[j] da[j])
        for t2 in range(t + 1):
            dpreatt[b, h, t, t2] = scale * a[t2] * (da[t2] - dot)
        for t2 in range(t + 1, T):
            dpreatt[b, h, t, t2] = 0.0


def attention_forward_blas(out, preatt, att, qkv, n_head):
    B, T, C = out.shape
    q, k, v = _heads(qkv, n_head)
    np.matmul(q, k.swapaxes(-1, -2), out=preatt)          # raw scores, unscaled
    causal_softmax_forward(att, preatt, np.float32(1.0 / math.sqrt(C // n_head)))
    y = np.matmul(att, v)                                 # (B, NH, T, hs)
    out.reshape(B, T, n_head, C // n_head)[:] = y.transpose(0, 2, 1, 3)


def attention_backward_blas(dqkv, dpreatt, datt, dout, qkv, att, n_head):
    """Writes dqkv (B, T, 3C); uses dpreatt and datt (B, NH, T, T) as its buffers."""
    B, T, C = dout.shape
    hs = C // n_head
    q, k, v = _heads(qkv, n_head)
    dy = dout.reshape(B, T, n_head, hs).transpose(0, 2, 1, 3)
    dq, dk, dv = _heads(dqkv, n_head)
    # in the forward pass this was: y = att @ v
    np.matmul(dy, v.swapaxes(-1, -2), out=datt)
    dv[:] = np.matmul(att.swapaxes(-1, -2), dy)
    causal_softmax_backward(dpreatt, datt, att, np.float32(1.0 / math.sqrt(hs)))
    # in the forward pass this was: preatt = q @ k^T
    dq[:] = np.matmul(dpreatt, k)
    dk[:] = np.matmul(dpreatt.swapaxes(-1, -2), q)


# ----------------------------------------------------------------------------- fused (default)
@kernel(parallel=True)
def attention_forward(out, preatt, att, qkv, n_head):
    B, T, C = out.shape
    hs = C // n_head
    scale = np.float32(1.0 / math.sqrt(hs))
    for bh in prange(B * n_head):
        b, h = bh // n_head, bh % n_head
        # private copies: q and v by row, k transposed, so each inner loop is contiguous
        q = np.empty((T, hs), np.float32)
        kT = np.empty((hs, T), np.float32)
        v = np.empty((T, hs), np.float32)
        for t in range(T):
            for i in range(hs):
                q[t, i] = qkv[b, t, h * hs + i]
                kT[i, t] = qkv[b, t, C + h * hs + i]
                v[t, i] = qkv[b, t, 2 * C + h * hs + i]
        s = np.empty(T, np.float32)     # one row of scores, then of probabilities
        o = np.empty(hs, np.float32)    # one row of output
        for t in range(T):
            # s[t2] = q[t] . k[t2] for t2 <= t, as a sum of rows of kT (vectorises over t2)
            s[:t + 1] = 0.0
            for i in range(hs):
                qi = q[t, i]
                for t2 in range(t + 1):
                    s[t2] += qi * kT[i, t2]
            maxval = s[0]
            for t2 in range(t + 1):
                preatt[b, h, t, t2] = s[t2]
                maxval = max(maxval, s[t2])
            total = np.float32(0.0)
            for t2 in range(t + 1):
                s[t2] = exp32(scale * (s[t2] - maxval))
                total += s[t2]
            inv_total = np.float32(1.0) / total
            # o = sum_t2 att[t, t2] * v[t2]
            o[:] = 0.0
            for t2 in range(t + 1):
                a = s[t2] * inv_total
                att[b, h, t, t2] = a
                for i in range(hs):
                    o[i] += a * v[t2, i]
            for t2 in range(t + 1, T):
                preatt[b, h, t, t2] = 0.0
                att[b, h, t, t2] = 0.0
            for i in range(hs):
                out[b, t, h * hs + i] = o[i]


@kernel(parallel=True)
def attention_backward(dqkv, dpreatt, datt, dout, qkv, att, n_head):
    """Writes dqkv (B, T, 3C), datt and dpreatt (B, NH, T, T)."""
    B, T, C = dout.shape
    hs = C // n_head
    scale = np.float32(1.0 / math.sqrt(hs))
    for bh in prange(B * n_head):
        b, h = bh // n_head, bh % n_head
        q = np.empty((T, hs), np.float32)
        k = np.empty((T, hs), np.float32)
        vT = np.empty((hs, T), np.float32)
        for t in range(T):
            for i in range(hs):
                q[t, i] = qkv[b, t, h * hs + i]
                k[t, i] = qkv[b, t, C + h * hs + i]
                vT[i, t] = qkv[b, t, 2 * C + h * hs + i]
        dq = np.zeros((T, hs), np.float32)
        dk = np.zeros((T, hs), np.float32)
        dv = np.zeros((T, hs), np.float32)
        a = np.empty(T, np.float32)     # att[t, :] of this row
        da = np.empty(T, np.float32)    # its gradient, then the gradient of the scores
        do = np.empty(hs, np.float32)   # dout of this row
        for t in range(T):
            for i in range(hs):
                do[i] = dout[b, t, h * hs + i]
            for t2 in range(t + 1):
                a[t2] = att[b, h, t, t2]
            # in the forward pass this was: out[t] = sum_t2 att[t, t2] * v[t2]
            da[:t + 1] = 0.0
            for i in range(hs):
                for t2 in range(t + 1):
                    da[t2] += do[i] * vT[i, t2]
            for t2 in range(t + 1):
                for i in range(hs):
                    dv[t2, i] += a[t2] * do[i]
            # in the forward pass this was: att[t] = softmax(scale * preatt[t])
            dot = np.float32(0.0)
            for t2 in range(t + 1):
                dot += a[t2] * da[t2]
            for t2 in range(t + 1):
                datt[b, h, t, t2] = da[t2]
                da[t2] = scale * a[t2] * (da[t2] - dot)
                dpreatt[b, h, t, t2] = da[t2]
            for t2 in range(t + 1, T):
                datt[b, h, t, t2] = 0.0
                dpreatt[b, h, t, t2] = 0.0
            # in the forward pass this was: preatt[t, t2] = q[t] . k[t2]
            for t2 in range(t + 1):
                for i in range(hs):
                    dq[t, i] += da[t2] * k[t2, i]
                    dk[t2, i] += da[t2] * q[t, i]
        for t in range(T):
            for i in range(hs):
                dqkv[b, t, h * hs + i] = dq[t, i]
                dqkv[b, t, C + h * hs + i] = dk[t, i]
                dqkv[b, t, 2 * C + h * hs + i] = dv[t, i]


@kernel(parallel=True)
def _attention_forward_loops(out, preatt, att, qkv, n_head):
    B, T, C = out.shape
    hs = C // n_head
    scale = np.float32(1.0 / math.sqrt(hs))
    for row in prange(B * n_head * T):
        b, h, t = row // (n_head * T), (row // T) % n_head, row % T
        q = qkv[b, t, h * hs:(h + 1) * hs]
        # scores against every earlier position, and their max (for a stable softmax)
        maxval = np.float32(-3.0e38)
        for t2 in range(t + 1):
            k = qkv[b, t2, C + h * hs:C + (h + 1) * hs]
            s = np.float32(0.0)
            for i in range(hs):
                s += q[i] * k[i]
            preatt[b, h, t, t2] = s
            maxval = max(maxval, s)
        total = np.float32(0.0)
        for t2 in range(t + 1):
            e = np.exp(scale * (preatt[b, h, t, t2] - maxval))
            att[b, h, t, t2] = e
            total += e
        for t2 in range(t + 1):
            att[b, h, t, t2] /= total
        for t2 in range(t + 1, T):
            preatt[b, h, t, t2] = 0.0
            att[b, h, t, t2] = 0.0
        # weighted sum of the values
        o = out[b, t, h * hs:(h + 1) * hs]
        o[:] = 0.0
        for t2 in range(t + 1):
            v = qkv[b, t2, 2 * C + h * hs:2 * C + (h + 1) * hs]
            a = att[b, h, t, t2]
            for i in range(hs):
                o[i] += a * v[i]


@kernel(parallel=True)
def _attention_backward_loops(dqkv, dpreatt, datt, dout, qkv, att, n_head):
    B, T, C = dout.shape
    hs = C // n_head
    scale = np.float32(1.0 / math.sqrt(hs))
    dqkv[:] = 0.0
    for bh in prange(B * n_head):   # one (batch, head) per thread: dk, dv rows are shared by all t
        b, h = bh // n_head, bh % n_head
        for t in range(T):
            do = dout[b, t, h * hs:(h + 1) * hs]
            # in the forward pass this was: o[i] += att[t, t2] * v[t2, i]
            for t2 in range(t + 1):
                v = qkv[b, t2, 2 * C + h * hs:2 * C + (h + 1) * hs]
                dv = dqkv[b, t2, 2 * C + h * hs:2 * C + (h + 1) * hs]
                s = np.float32(0.0)
                for i in range(hs):
                    s += v[i] * do[i]
                    dv[i] += att[b, h, t, t2] * do[i]
                datt[b, h, t, t2] = s
            # in the forward pass this was: att[t, :] = softmax(scale * preatt[t, :])
            dot = np.float32(0.0)
            for t2 in range(t + 1):
                dot += att[b, h, t, t2] * datt[b, h, t, t2]
            for t2 in range(t + 1):
                dpreatt[b, h, t, t2] = scale * att[b, h, t, t2] * (datt[b, h, t, t2] - dot)
            for t2 in range(t + 1, T):
                datt[b, h, t, t2] = 0.0
                dpreatt[b, h, t, t2] = 0.0
            # in the forward pass this was: preatt[t, t2] = q[t] . k[t2]
            q = qkv[b, t, h * hs:(h + 1) * hs]
            dq = dqkv[b, t, h * hs:(h + 1) * hs]
            for t2 in range(t + 1):
                k = qkv[b, t2, C + h * hs:C + (h + 1) * hs]
                dk = dqkv[b, t2, C + h * hs:C + (h + 1) * hs]
                d = dpreatt[b, h, t, t2]
                for i in range(hs):
                    dq[i] += d * k[i]
                    dk[i] += d * q[i]


def attention_forward_loops(out, preatt, att, qkv, n_head):
    _attention_forward_loops(out, preatt, att, qkv, n_head)


def attention_backward_loops(dqkv, dpreatt, datt, dout, qkv, att, n_head):
    _attention_backward_loops(dqkv, dpreatt, datt, dout, qkv, att, n_head)
