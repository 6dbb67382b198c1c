"""Causal multi-head self-attention (without the projections around it).

    q, k, v = split(qkv)                         # each (B, NH, T, hs), hs = C / NH
    preatt = q @ k^T                             # (B, NH, T, T) raw attention scores
    att = softmax(preatt / sqrt(hs), t2 <= t)    # (B, NH, T, T) probabilities, causal
    out = att @ v                                # (B, NH, T, hs) -> (B, T, C)

Shapes: qkv (B, T, 3C) laid out as [q | k | v] on the last axis, head h owning channels
h*hs:(h+1)*hs of each; out (B, T, C); preatt, att (B, NH, T, T) are kept for backward
and for the attention views (att is 0 above the diagonal; preatt there is unused).

Three versions, numbered naive first as in llm.c's dev/cuda, all sharing one softmax
(`attention_softmax` and its backward, at the top). Select one with kernels.use or
kernels.register("attention_forward", "blas"):
1. `attention_forward_loops` / `attention_backward_loops` ("loops"): plain loops, llm.c
   style, straight over qkv. The easiest to read; slower.
2. `attention_forward_blas` / `attention_backward_blas` ("blas"): the four matrix products
   go to BLAS through NumPy, masked half included; only the softmax is our own loop. As fast
   on an idle machine, but it makes thousands of small multi-threaded BLAS calls per step,
   and each one waits whenever another program holds a core (measured: 3-5x slower under
   load, e.g. a browser rendering the dashboard).
3. `attention_forward` / `attention_backward` (the default, "fused"): threads take the
   (batch, head) pairs one at a time (`_workpool.py`), and one thread does everything for a
   pair, on private copies of its q, k, v, with three small causal matrix products
   (`causal_dots`, `causal_weighted_sum` and its transpose) whose inner loops run over
   contiguous memory and vectorise; the masked half is skipped.
"""
import math

import numpy as np
from numba import prange

from ._compile import kernel
from ._math import exp32
from ._workpool import for_each


# ============================================================================= the softmax
# Every version calls these on one row's visible part: position t sees t2 <= t, so it passes
# att[t, :t+1] and preatt[t, :t+1], and writes the masked rest (zeros) itself.
@kernel
def attention_softmax(att, preatt, scale):
    """att (n,) = softmax(scale * preatt (n,)), shifted by the max so that exp cannot overflow."""
    n = preatt.shape[0]
    maxval = preatt[0]
    for i in range(1, n):
        maxval = max(maxval, preatt[i])
    total = np.float32(0.0)
    for i in range(n):
        e = exp32(scale * (preatt[i] - maxval))
        att[i] = e
        total += e
    inv_total = np.float32(1.0) / total
    for i in range(n):
        att[i] *= inv_total


@kernel
def attention_softmax_backward(dpreatt, datt, att, scale):
    """dpreatt (n,) = d loss / d preatt, from datt (n,) = d loss / d att and att (n,) of the
    forward (dpreatt may be datt itself)."""
    n = att.shape[0]
    dot = np.float32(0.0)
    for i in range(n):
        dot += att[i] * datt[i]
    # in the forward pass this was: att = softmax(scale * preatt)
    # so dpreatt[i] = scale * att[i] * (datt[i] - sum_j att[j] datt[j])
    for i in range(n):
        dpreatt[i] = scale * att[i] * (datt[i] - dot)


# ============================================================================= version 1: loops
# One (batch, head, t) row per iteration of the forward, one (batch, head) per iteration of the
# backward (the dk, dv rows of a head are shared by all t). Straight over qkv, no copies.
@kernel(parallel=True)
def _attention_forward_loops(out, preatt, att, qkv, n_head):
    B, T, C = out.shape
    hs = C // n_head
    scale = np.float32(1.0 / math.sqrt(hs))
    for row in prange(B * n_head * T):
        b, h, t = row // (n_head * T), (row // T) % n_head, row % T
        q = qkv[b, t, h * hs:(h + 1) * hs]
        # scores against every earlier position
        for t2 in range(t + 1):
            k = qkv[b, t2, C + h * hs:C + (h + 1) * hs]
            s = np.float32(0.0)
            for i in range(hs):
                s += q[i] * k[i]
            preatt[b, h, t, t2] = s
        attention_softmax(att[b, h, t, :t + 1], preatt[b, h, t, :t + 1], scale)
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


def attention_forward_loops(out, preatt, att, qkv, n_head):
    _attention_forward_loops(out, preatt, att, qkv, n_head)


@kernel(parallel=True)
def _attention_backward_loops(dqkv, dpreatt, datt, dout, qkv, att, n_head):
    B, T, C = dout.shape
    hs = C // n_head
    scale = np.float32(1.0 / math.sqrt(hs))
    dqkv[:] = 0.0
    for bh in prange(B * n_head):
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
            attention_softmax_backward(dpreatt[b, h, t, :t + 1], datt[b, h, t, :t + 1],
                                       att[b, h, t, :t + 1], scale)
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


def attention_backward_loops(dqkv, dpreatt, datt, dout, qkv, att, n_head):
    _attention_backward_loops(dqkv, dpreatt, datt, dout, qkv, att, n_head)


# ============================================================================= version 2: BLAS
# NumPy's matmul (BLAS) for the four products, over the full (T, T) squares; the softmax is
# ours, one row per iteration of a parallel loop.
def _heads(qkv, n_head):
    """Views q, k, v of qkv (B, T, 3C) as (B, NH, T, hs) each, without copying."""
    B, T, C3 = qkv.shape
    hs = C3 // 3 // n_head
    qkv5 = qkv.reshape(B, T, 3, n_head, hs)
    return [qkv5[:, :, i].transpose(0, 2, 1, 3) for i in range(3)]


@kernel(parallel=True)
def causal_softmax_forward(att, preatt, scale):
    """att[b, h, t, :t+1] = softmax(scale * preatt[b, h, t, :t+1]); att[b, h, t, t+1:] = 0."""
    B, NH, T, _ = att.shape
    for row in prange(B * NH * T):
        b, h, t = row // (NH * T), (row // T) % NH, row % T
        attention_softmax(att[b, h, t, :t + 1], preatt[b, h, t, :t + 1], scale)
        for t2 in range(t + 1, T):
            att[b, h, t, t2] = 0.0


def attention_forward_blas(out, preatt, att, qkv, n_head):
    B, T, C = out.shape
    q, k, v = _heads(qkv, n_head)
    np.matmul(q, k.swapaxes(-1, -2), out=preatt)          # raw scores, unscaled
    causal_softmax_forward(att, preatt, np.float32(1.0 / math.sqrt(C // n_head)))
    y = np.matmul(att, v)                                 # (B, NH, T, hs)
    out.reshape(B, T, n_head, C // n_head)[:] = y.transpose(0, 2, 1, 3)


@kernel(parallel=True)
def causal_softmax_backward(dpreatt, datt, att, scale):
    """dpreatt = d loss / d preatt, given datt = d loss / d att (writes, may alias datt)."""
    B, NH, T, _ = att.shape
    for row in prange(B * NH * T):
        b, h, t = row // (NH * T), (row // T) % NH, row % T
        attention_softmax_backward(dpreatt[b, h, t, :t + 1], datt[b, h, t, :t + 1], att[b, h, t, :t + 1],
                                   scale)
        for t2 in range(t + 1, T):
            dpreatt[b, h, t, t2] = 0.0


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


# ============================================================================= version 3: fused (default)
# One (batch, head) per thread. Its q, k, v are copied into contiguous (T, hs) arrays, and the
# work is three small causal matrix products written so that the compiler vectorises their
# inner loops (each takes several rows of the triangle per pass, so that every value loaded
# is used more than once), plus the softmax between them. The masked half is skipped.
@kernel
def causal_dots(s, a, b):
    """s[t, t2] = a[t] . b[t2] for t2 <= t. a, b: (T, n); s: (T, T), above the diagonal untouched.
    Four products share each load of a[t, i]; the loop over i vectorises."""
    T, n = a.shape
    for t in range(T):
        four = (t + 1) // 4 * 4
        for t2 in range(0, four, 4):
            x0 = np.float32(0.0)
            x1 = np.float32(0.0)
            x2 = np.float32(0.0)
            x3 = np.float32(0.0)
            for i in range(n):
                ai = a[t, i]
                x0 += ai * b[t2, i]
                x1 += ai * b[t2 + 1, i]
                x2 += ai * b[t2 + 2, i]
                x3 += ai * b[t2 + 3, i]
            s[t, t2] = x0
            s[t, t2 + 1] = x1
            s[t, t2 + 2] = x2
            s[t, t2 + 3] = x3
        for t2 in range(four, t + 1):
            x = np.float32(0.0)
            for i in range(n):
                x += a[t, i] * b[t2, i]
            s[t, t2] = x


@kernel
def causal_weighted_sum(out, w, x):
    """out[t] = sum over t2 <= t of w[t, t2] * x[t2]. w: (T, T); x, out: (T, n).
    Two rows of out per pass and four rows of x per step: each x value loaded is used twice."""
    T, n = x.shape
    out[:] = 0.0
    for t in range(0, T - 1, 2):
        o0 = out[t]
        o1 = out[t + 1]
        four = (t + 1) // 4 * 4                  # up to here both rows use all four of x
        for t2 in range(0, four, 4):
            x0, x1, x2, x3 = x[t2], x[t2 + 1], x[t2 + 2], x[t2 + 3]
            a0, a1, a2, a3 = w[t, t2], w[t, t2 + 1], w[t, t2 + 2], w[t, t2 + 3]
            b0, b1, b2, b3 = w[t + 1, t2], w[t + 1, t2 + 1], w[t + 1, t2 + 2], w[t + 1, t2 + 3]
            for i in range(n):
                xa, xb, xc, xd = x0[i], x1[i], x2[i], x3[i]
                o0[i] += a0 * xa + a1 * xb + a2 * xc + a3 * xd
                o1[i] += b0 * xa + b1 * xb + b2 * xc + b3 * xd
        for t2 in range(four, t + 1):
            a, b = w[t, t2], w[t + 1, t2]
            for i in range(n):
                o0[i] += a * x[t2, i]
                o1[i] += b * x[t2, i]
        b = w[t + 1, t + 1]                      # the diagonal of the second row
        for i in range(n):
            o1[i] += b * x[t + 1, i]
    if T % 2 == 1:
        t = T - 1
        for t2 in range(T):
            a = w[t, t2]
            for i in range(n):
                out[t, i] += a * x[t2, i]


@kernel
def causal_weighted_sum_transposed(out, w, x):
    """out[t2] = sum over t >= t2 of w[t, t2] * x[t] (the transpose of causal_weighted_sum).
    Walks w by rows, four at a time, adding each row's share into every out[t2] it reaches."""
    T, n = x.shape
    out[:] = 0.0
    four = T // 4 * 4
    for t in range(0, four, 4):
        x0, x1, x2, x3 = x[t], x[t + 1], x[t + 2], x[t + 3]
        w0, w1, w2, w3 = w[t], w[t + 1], w[t + 2], w[t + 3]
        for t2 in range(t + 1):                  # all four rows reach these
            o = out[t2]
            a0, a1, a2, a3 = w0[t2], w1[t2], w2[t2], w3[t2]
            for i in range(n):
                o[i] += a0 * x0[i] + a1 * x1[i] + a2 * x2[i] + a3 * x3[i]
        for t2 in range(t + 1, t + 4):           # the corner: only the later rows reach these
            o = out[t2]
            for r in range(t2 - t, 4):
                a = w[t + r, t2]
                for i in range(n):
                    o[i] += a * x[t + r, i]
    for t in range(four, T):
        for t2 in range(t + 1):
            a = w[t, t2]
            for i in range(n):
                out[t2, i] += a * x[t, i]


@kernel
def load_head(dst, src, offset):
    """dst[t, i] = src[t, offset + i]: one head's channels as a contiguous (T, hs) copy."""
    T, hs = dst.shape
    for t in range(T):
        row = src[t, offset:offset + hs]
        for i in range(hs):
            dst[t, i] = row[i]


@kernel
def store_head(dst, src, offset):
    """dst[t, offset + i] = src[t, i]: the inverse of load_head."""
    T, hs = src.shape
    for t in range(T):
        row = dst[t, offset:offset + hs]
        for i in range(hs):
            row[i] = src[t, i]


@kernel(nogil=True)
def head_forward(out, s, a, qkv, h, n_head):
    """One (batch, head) of attention_forward: out (T, C), s and a (T, T) its preatt and att,
    qkv (T, 3C); writes head h's channels of out."""
    T, C = out.shape
    hs = C // n_head
    scale = np.float32(1.0 / math.sqrt(hs))
    q = np.empty((T, hs), np.float32)
    k = np.empty((T, hs), np.float32)
    v = np.empty((T, hs), np.float32)
    load_head(q, qkv, h * hs)
    load_head(k, qkv, C + h * hs)
    load_head(v, qkv, 2 * C + h * hs)
    causal_dots(s, q, k)
    for t in range(T):
        attention_softmax(a[t, :t + 1], s[t, :t + 1], scale)
        for t2 in range(t + 1, T):
            s[t, t2] = 0.0
            a[t, t2] = 0.0
    o = np.empty((T, hs), np.float32)
    causal_weighted_sum(o, a, v)
    store_head(out, o, h * hs)


# Threads take (batch, head) pairs one at a time (see _workpool.py for why not prange); each
# head's work is an ordinary compiled function, which can be called (and tested, or stepped
# through) on its own.
def attention_forward(out, preatt, att, qkv, n_head):
    def one_head(bh):
        b, h = bh // n_head, bh % n_head
        head_forward(out[b], preatt[b, h], att[b, h], qkv[b], h, n_head)
    for_each(out.shape[0] * n_head, one_head)


@kernel(nogil=True)
def head_backward(dqkv, ds, da, dout, qkv, a, h, n_head):
    """One (batch, head) of attention_backward: dqkv (T, 3C), ds and da (T, T) its dpreatt and
    datt, dout (T, C), qkv (T, 3C), a (T, T) its att; writes head h's channels of dqkv."""
    T, C = dout.shape
    hs = C // n_head
    scale = np.float32(1.0 / math.sqrt(hs))
    q = np.empty((T, hs), np.float32)
    k = np.empty((T, hs), np.float32)
    v = np.empty((T, hs), np.float32)
    do = np.empty((T, hs), np.float32)
    load_head(q, qkv, h * hs)
    load_head(k, qkv, C + h * hs)
    load_head(v, qkv, 2 * C + h * hs)
    load_head(do, dout, h * hs)
    # in the forward pass this was: out[t] = sum over t2 of att[t, t2] * v[t2]
    causal_dots(da, do, v)
    g = np.empty((T, hs), np.float32)
    causal_weighted_sum_transposed(g, a, do)
    store_head(dqkv, g, 2 * C + h * hs)
    # in the forward pass this was: att[t, :t+1] = softmax(scale * preatt[t, :t+1])
    for t in range(T):
        attention_softmax_backward(ds[t, :t + 1], da[t, :t + 1], a[t, :t + 1], scale)
        for t2 in range(t + 1, T):
            da[t, t2] = 0.0
            ds[t, t2] = 0.0
    # in the forward pass this was: preatt[t, t2] = q[t] . k[t2]
    causal_weighted_sum(g, ds, k)
    store_head(dqkv, g, h * hs)
    causal_weighted_sum_transposed(g, ds, q)
    store_head(dqkv, g, C + h * hs)


def attention_backward(dqkv, dpreatt, datt, dout, qkv, att, n_head):
    """Writes dqkv (B, T, 3C), datt and dpreatt (B, NH, T, T)."""
    def one_head(bh):
        b, h = bh // n_head, bh % n_head
        head_backward(dqkv[b], dpreatt[b, h], datt[b, h], dout[b], qkv[b], att[b, h], h, n_head)
    for_each(dout.shape[0] * n_head, one_head)
