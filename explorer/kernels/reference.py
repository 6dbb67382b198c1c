"""Plain-NumPy references for every kernel: the math of each op, written to be read.

Each function here RETURNS new arrays (it never writes into its arguments) and computes in
the dtype it is given: pass float64 for an accurate answer to hold a float32 kernel to.
Forward sits above backward, with the shipped kernel's argument names and shapes
(B batch, T time, C channels, NH heads, hs = C / NH, V vocabulary, maxT = block_size).

Only the math lives here. The cases that hold a kernel to it (random arguments, edge sizes,
what each output should be) are the kernel lab's: explorer/lab/cases.py.
"""
import math

import numpy as np

LN_EPS = 1e-5                         # layernorm's epsilon, as GPT-2
GELU_SCALE = math.sqrt(2.0 / math.pi)  # the tanh-GELU's constants
GELU_CUBIC = 0.044715


# ----------------------------------------------------------------------------- encoder
def encoder_forward(idx, wte, wpe):
    """out (B, T, C) = wte[idx] + wpe[:T].  idx (B, T) int, wte (V, C), wpe (maxT, C)."""
    T = idx.shape[1]
    return wte[idx] + wpe[:T]


def encoder_backward(dout, idx, vocab_size):
    """This call's contributions (dwte (V, C), dwpe (T, C)) from dout (B, T, C).

    The shipped kernel ADDS the dwte contribution into its buffer (the tied LM head's
    gradient is already there) and writes all of its (maxT, C) dwpe: rows :T from this
    batch, zeros past T (positions the batch did not use get no gradient)."""
    dwte = np.zeros((vocab_size, dout.shape[-1]), dout.dtype)
    np.add.at(dwte, idx, dout)      # a token seen at several positions collects them all
    dwpe = dout.sum(axis=0)         # position t is used once per batch row
    return dwte, dwpe


# ----------------------------------------------------------------------------- layernorm
def layernorm_forward(inp, weight, bias, eps=LN_EPS):
    """(out (B, T, C), mean (B, T), rstd (B, T)) of inp (B, T, C); weight, bias (C,).

    norm = (x - mean) / sqrt(var + eps) with the biased variance; out = norm * weight + bias."""
    mean = inp.mean(axis=-1)
    centred = inp - mean[..., None]
    rstd = 1.0 / np.sqrt((centred ** 2).mean(axis=-1) + eps)
    return centred * rstd[..., None] * weight + bias, mean, rstd


def layernorm_backward(dout, inp, weight, mean, rstd):
    """(dinp (B, T, C), dweight (C,), dbias (C,)) from dout (B, T, C) and the forward's cache.

    With n = norm and g = dout * weight (the gradient reaching n), since both mean and rstd
    depend on every x of the row:  dx = rstd * (g - mean(g) - n * mean(g * n))."""
    norm = (inp - mean[..., None]) * rstd[..., None]
    g = dout * weight
    dinp = rstd[..., None] * (g - g.mean(axis=-1, keepdims=True)
                              - norm * (g * norm).mean(axis=-1, keepdims=True))
    summed_axes = tuple(range(dout.ndim - 1))
    return dinp, (dout * norm).sum(axis=summed_axes), dout.sum(axis=summed_axes)


# ----------------------------------------------------------------------------- matmul
def matmul_forward(inp, weight, bias=None):
    """out (B, T, OC) = inp (B, T, C) @ weight.T + bias; weight (OC, C), bias (OC,) or None."""
    out = inp @ weight.T
    return out if bias is None else out + bias


def matmul_backward(dout, inp, weight):
    """(dinp (B, T, C), dweight (OC, C), dbias (OC,)) from dout (B, T, OC)."""
    dout_rows = dout.reshape(-1, dout.shape[-1])   # (N, OC), N = B*T
    inp_rows = inp.reshape(-1, inp.shape[-1])      # (N, C)
    return dout @ weight, dout_rows.T @ inp_rows, dout_rows.sum(axis=0)


# ----------------------------------------------------------------------------- attention
def _to_heads(x, n_head):
    """(B, T, C) -> (B, NH, T, hs): head h owns channels h*hs:(h+1)*hs."""
    B, T, C = x.shape
    return x.reshape(B, T, n_head, C // n_head).transpose(0, 2, 1, 3)


def _split_heads(qkv, n_head):
    """q, k, v, each (B, NH, T, hs), from qkv (B, T, 3C) laid out [q | k | v]."""
    return [_to_heads(x, n_head) for x in np.split(qkv, 3, axis=-1)]


def _merge_heads(x):
    """(B, NH, T, hs) -> (B, T, C), the inverse of _to_heads."""
    B, NH, T, hs = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, T, NH * hs)


def attention_forward(qkv, n_head):
    """(out (B, T, C), preatt (B, NH, T, T), att (B, NH, T, T)) of qkv (B, T, 3C).

    preatt = q @ k^T, UNSCALED (the full product; entries above the diagonal are unused);
    att = causal softmax of preatt / sqrt(hs), exactly 0 above the diagonal; out = att @ v."""
    q, k, v = _split_heads(qkv, n_head)
    T, hs = q.shape[2], q.shape[3]
    preatt = q @ k.swapaxes(-1, -2)
    future = np.triu(np.ones((T, T), dtype=bool), k=1)    # position t may not see t2 > t
    scores = np.where(future, -np.inf, preatt / math.sqrt(hs))
    exps = np.exp(scores - scores.max(axis=-1, keepdims=True))   # exp(-inf) = 0
    att = exps / exps.sum(axis=-1, keepdims=True)
    return _merge_heads(att @ v), preatt, att


def attention_decode(qkv, n_head, new):
    """out (B, new, C): attention_forward's output rows of the last `new` positions of qkv."""
    return attention_forward(qkv, n_head)[0][:, qkv.shape[1] - new:]


def attention_backward(dout, qkv, att, n_head):
    """(dqkv (B, T, 3C), dpreatt (B, NH, T, T), datt (B, NH, T, T)) from dout (B, T, C).

    datt = dy @ v^T is the full product (only t2 <= t matters); dpreatt is 0 above the
    diagonal because att is."""
    q, k, v = _split_heads(qkv, n_head)
    hs = q.shape[3]
    dy = _to_heads(dout, n_head)
    # in the forward pass this was: y = att @ v
    datt = dy @ v.swapaxes(-1, -2)
    dv = att.swapaxes(-1, -2) @ dy
    # softmax backward, a = softmax(s x): dx = s * a * (da - sum_j a_j da_j)
    dpreatt = att * (datt - (att * datt).sum(axis=-1, keepdims=True)) / math.sqrt(hs)
    # in the forward pass this was: preatt = q @ k^T
    dq = dpreatt @ k
    dk = dpreatt.swapaxes(-1, -2) @ q
    dqkv = np.concatenate([_merge_heads(dq), _merge_heads(dk), _merge_heads(dv)], axis=-1)
    return dqkv, dpreatt, datt


# ----------------------------------------------------------------------------- gelu
def gelu_forward(inp):
    """out = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3); any shape."""
    u = GELU_SCALE * (inp + GELU_CUBIC * inp ** 3)
    return 0.5 * inp * (1.0 + np.tanh(u))


def gelu_backward(inp, dout):
    """dinp = gelu'(inp) * dout, where (product rule, tanh' = 1 - tanh^2)
    gelu'(x) = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) du/dx,  du/dx = sqrt(2/pi)(1 + 3 0.044715 x^2)."""
    tanh_u = np.tanh(GELU_SCALE * (inp + GELU_CUBIC * inp ** 3))
    du_dx = GELU_SCALE * (1.0 + 3.0 * GELU_CUBIC * inp ** 2)
    return (0.5 * (1.0 + tanh_u) + 0.5 * inp * (1.0 - tanh_u ** 2) * du_dx) * dout


# ----------------------------------------------------------------------------- residual
def residual_forward(inp1, inp2):
    """out = inp1 + inp2 (same shapes)."""
    return inp1 + inp2


def residual_backward(dout):
    """(dinp1, dinp2): both inputs receive dout unchanged. (No kernel: the model does this.)"""
    return dout.copy(), dout.copy()


# ----------------------------------------------------------------------------- softmax + cross-entropy
def softmax_forward(logits):
    """probs (..., V) = softmax(logits) over the last axis (shifted by the max, for exp)."""
    exps = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exps / exps.sum(axis=-1, keepdims=True)


def crossentropy_forward(logits, targets):
    """(losses (B, T), probs (B, T, V)) of logits (B, T, V) and int targets (B, T).

    losses = -log softmax(logits)[target] = logsumexp(logits) - logits[target];
    a target of -1 marks an ignored position, whose loss is 0."""
    maxval = logits.max(axis=-1)
    logsumexp = maxval + np.log(np.exp(logits - maxval[..., None]).sum(axis=-1))
    picked = np.take_along_axis(logits, np.maximum(targets, 0)[..., None], axis=-1)[..., 0]
    return np.where(targets >= 0, logsumexp - picked, 0.0).astype(logits.dtype), softmax_forward(logits)


def crossentropy_softmax_backward(dlosses, probs, targets):
    """dlogits (B, T, V) = (probs - onehot(target)) * dlosses, given dlosses (B, T); 0 where
    the target is -1."""
    onehot = np.zeros_like(probs)
    np.put_along_axis(onehot, np.maximum(targets, 0)[..., None], 1.0, axis=-1)
    weight = np.where(targets >= 0, dlosses, 0.0)[..., None]
    return ((probs - onehot) * weight).astype(probs.dtype)


# ----------------------------------------------------------------------------- optimizer
def adamw_update(params, grads, m, v, segments, decay, step, lr, beta1, beta2, eps,
                 weight_decay, grad_scale):
    """(params, m, v) after one AdamW step (torch.optim.AdamW's formula), all flat (N,).

    segments (S+1,) are the offsets of the S named parameters (covering 0..N) and decay (S,)
    says which get weight decay; `step` counts from 1; grads are multiplied by grad_scale."""
    g = grads * grad_scale
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    m_hat = m / (1 - beta1 ** step)           # bias corrections: m and v start at 0
    v_hat = v / (1 - beta2 ** step)
    decays = np.repeat(np.asarray(decay, bool), np.diff(segments))
    params = np.where(decays, params * (1 - lr * weight_decay), params)   # decoupled decay
    return params - lr * m_hat / (np.sqrt(v_hat) + eps), m, v


def grad_norm(grads):
    """The Euclidean norm of all gradients, sqrt(sum g^2), accumulated in float64."""
    return float(np.sqrt(np.sum(np.asarray(grads, np.float64) ** 2)))
