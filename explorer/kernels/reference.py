"""Plain-NumPy references for every kernel: the math of each op, written to be read.

Each function here RETURNS new arrays (it never writes into its arguments) and computes in
the dtype it is given: pass float64 for an accurate answer to hold a float32 kernel to.
Forward sits above backward, with the shipped kernel's argument names and shapes
(B batch, T time, C channels, NH heads, hs = C / NH, V vocabulary, maxT = block_size).

At the bottom, KERNEL_SPECS says, for every name in the kernel registry, how to build
random arguments in the shipped kernel's order (outputs first, then inputs) and what the
outputs should be; `compare_to_reference(name, fn)` runs a candidate kernel on them:

    from explorer.kernels import reference
    reference.compare_to_reference("gelu_forward", my_gelu)   # {"out": 3.1e-08}
"""
import math
from collections.abc import Callable
from dataclasses import dataclass

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


# ============================================================================= checking a kernel
#: Sizes used where a check does not give them: small, and not multiples of 8 on purpose.
#: "bias" says whether matmul gets a bias; N and S size the optimizer's flat buffer.
DEFAULT_SIZES = {"B": 2, "T": 5, "C": 12, "NH": 3, "V": 11, "maxT": 7, "OC": 9, "bias": True,
                 "N": 40, "S": 4}


@dataclass(frozen=True)
class KernelSpec:
    """How to check one registry kernel against the references above.

    make_args(rng, sizes, dtype) -> {argument name: value} in the kernel's order. Outputs
        come first, holding stale random values: a kernel must overwrite them, not add.
    reference(args) -> {output name: expected value}, given float64 copies of the args.
    outputs: the arguments the kernel writes; with returns=True, the single name its
        return value is compared under.
    masks(args) -> {output name: bool array of the entries that are compared}; outputs
        it leaves out are compared whole (e.g. entries above the causal diagonal are free).
    scales(args) -> {output name: a magnitude the error is measured against, where it
        exceeds the output's own}: for outputs computed as a difference of larger numbers,
        whose float32 error follows those numbers, not the (possibly ~0) result.
    """
    make_args: Callable
    reference: Callable
    outputs: tuple
    masks: Callable = None
    returns: bool = False
    scales: Callable = None


def _normal(rng, shape, dtype, scale=1.0, shift=0.0):
    return (shift + scale * rng.standard_normal(shape)).astype(dtype)


def _ids(rng, shape, V, ignore_fraction=0.0):
    """Random token ids in [0, V); a fraction of them -1 (a target to ignore)."""
    ids = rng.integers(0, V, size=shape)
    return np.where(rng.random(shape) < ignore_fraction, -1, ids).astype(np.int64)


def _causal(T):
    """(T, T) bool: True where t2 <= t, the entries of an attention matrix that mean something."""
    return np.tril(np.ones((T, T), dtype=bool))


def _heads_and_size(s):
    if s["C"] % s["NH"]:
        raise ValueError(f"attention needs C divisible by NH; got C={s['C']}, NH={s['NH']}")
    return s["NH"], s["C"]


def _encoder_args(rng, s, dtype, backward):
    B, T, C, V, maxT = s["B"], s["T"], s["C"], s["V"], max(s["maxT"], s["T"])
    if backward:
        return {"dwte": _normal(rng, (V, C), dtype), "dwpe": _normal(rng, (maxT, C), dtype),
                "dout": _normal(rng, (B, T, C), dtype), "idx": _ids(rng, (B, T), V)}
    return {"out": _normal(rng, (B, T, C), dtype), "idx": _ids(rng, (B, T), V),
            "wte": _normal(rng, (V, C), dtype), "wpe": _normal(rng, (maxT, C), dtype)}


def _encoder_backward_expected(a):
    dwte, dwpe = encoder_backward(a["dout"], a["idx"], a["dwte"].shape[0])
    full_dwpe = np.zeros_like(a["dwpe"])
    full_dwpe[:dwpe.shape[0]] = dwpe
    return {"dwte": a["dwte"] + dwte, "dwpe": full_dwpe}   # dwte accumulates


def _layernorm_args(rng, s, dtype, backward):
    B, T, C = s["B"], s["T"], s["C"]
    inp = _normal(rng, (B, T, C), dtype, scale=2.0, shift=0.5)
    weight, bias = _normal(rng, (C,), dtype, 0.5, 1.0), _normal(rng, (C,), dtype, 0.5)
    if not backward:
        return {"out": _normal(rng, (B, T, C), dtype), "mean": _normal(rng, (B, T), dtype),
                "rstd": _normal(rng, (B, T), dtype), "inp": inp, "weight": weight, "bias": bias}
    _, mean, rstd = layernorm_forward(inp.astype(np.float64), weight, bias)
    return {"dinp": _normal(rng, (B, T, C), dtype), "dweight": _normal(rng, (C,), dtype),
            "dbias": _normal(rng, (C,), dtype), "dout": _normal(rng, (B, T, C), dtype),
            "inp": inp, "weight": weight, "mean": mean.astype(dtype), "rstd": rstd.astype(dtype)}


def _matmul_args(rng, s, dtype, backward):
    B, T, C, OC = s["B"], s["T"], s["C"], s["OC"]
    inp, weight = _normal(rng, (B, T, C), dtype), _normal(rng, (OC, C), dtype)
    if not backward:
        bias = _normal(rng, (OC,), dtype) if s["bias"] else None
        return {"out": _normal(rng, (B, T, OC), dtype), "inp": inp, "weight": weight, "bias": bias}
    return {"dinp": _normal(rng, (B, T, C), dtype), "dweight": _normal(rng, (OC, C), dtype),
            "dbias": _normal(rng, (OC,), dtype) if s["bias"] else None,
            "dout": _normal(rng, (B, T, OC), dtype), "inp": inp, "weight": weight}


def _matmul_backward_expected(a):
    dinp, dweight, dbias = matmul_backward(a["dout"], a["inp"], a["weight"])
    return {"dinp": dinp, "dweight": dweight, "dbias": None if a["dbias"] is None else dbias}


def _attention_args(rng, s, dtype, backward):
    B, T, (NH, C) = s["B"], s["T"], _heads_and_size(s)
    qkv = _normal(rng, (B, T, 3 * C), dtype)
    scratch = {name: _normal(rng, (B, NH, T, T), dtype) for name in ("preatt", "att")}
    if not backward:
        return {"out": _normal(rng, (B, T, C), dtype), **scratch, "qkv": qkv, "n_head": NH}
    att = attention_forward(qkv.astype(np.float64), NH)[2].astype(dtype)
    return {"dqkv": _normal(rng, (B, T, 3 * C), dtype), "dpreatt": scratch["preatt"],
            "datt": scratch["att"], "dout": _normal(rng, (B, T, C), dtype), "qkv": qkv,
            "att": att, "n_head": NH}


def _elementwise_args(rng, s, dtype, names):
    shape = (s["B"], s["T"], s["C"])
    return {name: _normal(rng, shape, dtype, scale=2.0) for name in names}


def _crossentropy_args(rng, s, dtype, kind):
    B, T, V = s["B"], s["T"], s["V"]
    logits = _normal(rng, (B, T, V), dtype, scale=3.0)
    targets = _ids(rng, (B, T), V, ignore_fraction=0.2)
    if kind == "softmax":
        return {"probs": _normal(rng, (B, T, V), dtype), "logits": logits}
    if kind == "forward":
        return {"losses": _normal(rng, (B, T), dtype), "probs": _normal(rng, (B, T, V), dtype),
                "logits": logits, "targets": targets}
    return {"dlogits": _normal(rng, (B, T, V), dtype),
            "dlosses": np.abs(_normal(rng, (B, T), dtype)) + np.asarray(0.1, dtype),
            "probs": softmax_forward(logits.astype(np.float64)).astype(dtype), "targets": targets}


def _adamw_args(rng, s, dtype):
    N, S = s["N"], min(s["S"], s["N"])
    cuts = np.sort(rng.choice(np.arange(1, N), size=S - 1, replace=False)) if S > 1 else []
    return {"params": _normal(rng, (N,), dtype), "grads": _normal(rng, (N,), dtype),
            "m": _normal(rng, (N,), dtype, 0.1), "v": np.abs(_normal(rng, (N,), dtype, 0.1)),
            "segments": np.array([0, *cuts, N], dtype=np.int64),
            "decay": rng.random(S) < 0.5, "step": int(rng.integers(1, 20)), "lr": 1e-2,
            "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.1, "grad_scale": 0.7}


def _named(names, values):
    return dict(zip(names, values))


KERNEL_SPECS = {
    "encoder_forward": KernelSpec(
        lambda rng, s, dt: _encoder_args(rng, s, dt, backward=False),
        lambda a: {"out": encoder_forward(a["idx"], a["wte"], a["wpe"])}, ("out",)),
    "encoder_backward": KernelSpec(
        lambda rng, s, dt: _encoder_args(rng, s, dt, backward=True),
        _encoder_backward_expected, ("dwte", "dwpe")),
    "layernorm_forward": KernelSpec(
        lambda rng, s, dt: _layernorm_args(rng, s, dt, backward=False),
        lambda a: _named(("out", "mean", "rstd"), layernorm_forward(a["inp"], a["weight"], a["bias"])),
        ("out", "mean", "rstd")),
    "layernorm_backward": KernelSpec(
        lambda rng, s, dt: _layernorm_args(rng, s, dt, backward=True),
        lambda a: _named(("dinp", "dweight", "dbias"), layernorm_backward(
            a["dout"], a["inp"], a["weight"], a["mean"], a["rstd"])),
        ("dinp", "dweight", "dbias"),
        # dinp = rstd * (g - mean(g) - norm * mean(g * norm)), g = dout * weight; with C <= 2
        # the terms cancel to ~0 (a normalised row of two is +-1 whatever x is)
        scales=lambda a: {"dinp": np.abs(a["rstd"][..., None] * a["dout"] * a["weight"]).max()}),
    "matmul_forward": KernelSpec(
        lambda rng, s, dt: _matmul_args(rng, s, dt, backward=False),
        lambda a: {"out": matmul_forward(a["inp"], a["weight"], a["bias"])}, ("out",)),
    "matmul_backward": KernelSpec(
        lambda rng, s, dt: _matmul_args(rng, s, dt, backward=True),
        _matmul_backward_expected, ("dinp", "dweight", "dbias")),
    "attention_forward": KernelSpec(
        lambda rng, s, dt: _attention_args(rng, s, dt, backward=False),
        lambda a: _named(("out", "preatt", "att"), attention_forward(a["qkv"], a["n_head"])),
        ("out", "preatt", "att"),
        masks=lambda a: {"preatt": _causal(a["qkv"].shape[1])}),
    "attention_backward": KernelSpec(
        lambda rng, s, dt: _attention_args(rng, s, dt, backward=True),
        lambda a: _named(("dqkv", "dpreatt", "datt"), attention_backward(
            a["dout"], a["qkv"], a["att"], a["n_head"])),
        ("dqkv", "dpreatt", "datt"),
        # dpreatt and datt are the kernel's scratch; only t2 <= t is defined
        masks=lambda a: {n: _causal(a["qkv"].shape[1]) for n in ("dpreatt", "datt")}),
    "gelu_forward": KernelSpec(
        lambda rng, s, dt: _elementwise_args(rng, s, dt, ("out", "inp")),
        lambda a: {"out": gelu_forward(a["inp"])}, ("out",)),
    "gelu_backward": KernelSpec(
        lambda rng, s, dt: _elementwise_args(rng, s, dt, ("dinp", "inp", "dout")),
        lambda a: {"dinp": gelu_backward(a["inp"], a["dout"])}, ("dinp",)),
    "residual_forward": KernelSpec(
        lambda rng, s, dt: _elementwise_args(rng, s, dt, ("out", "inp1", "inp2")),
        lambda a: {"out": residual_forward(a["inp1"], a["inp2"])}, ("out",)),
    "crossentropy_forward": KernelSpec(
        lambda rng, s, dt: _crossentropy_args(rng, s, dt, "forward"),
        lambda a: _named(("losses", "probs"), crossentropy_forward(a["logits"], a["targets"])),
        ("losses", "probs"),
        # a loss is logsumexp(logits) - logits[target]: near 0 when the target wins by far
        scales=lambda a: {"losses": np.abs(a["logits"]).max()}),
    "crossentropy_softmax_backward": KernelSpec(
        lambda rng, s, dt: _crossentropy_args(rng, s, dt, "backward"),
        lambda a: {"dlogits": crossentropy_softmax_backward(a["dlosses"], a["probs"], a["targets"])},
        ("dlogits",)),
    "softmax_forward": KernelSpec(
        lambda rng, s, dt: _crossentropy_args(rng, s, dt, "softmax"),
        lambda a: {"probs": softmax_forward(a["logits"])}, ("probs",)),
    "adamw_update": KernelSpec(
        lambda rng, s, dt: _adamw_args(rng, s, dt),
        lambda a: _named(("params", "m", "v"), adamw_update(*a.values())), ("params", "m", "v")),
    "grad_norm": KernelSpec(
        lambda rng, s, dt: {"grads": _normal(rng, (s["N"],), dt)},
        lambda a: {"norm": grad_norm(a["grads"])}, ("norm",), returns=True),
}


def _float64_copies(args):
    """Copies of the arguments with float arrays in float64 (None, ints and scalars as they are)."""
    def convert(x):
        if isinstance(x, np.ndarray):
            return x.astype(np.float64) if np.issubdtype(x.dtype, np.floating) else x.copy()
        return x
    return {name: convert(x) for name, x in args.items()}


def make_case(name, sizes=None, seed=0, dtype=np.float32):
    """(args, expected) for kernel `name`: random arguments in its order and the outputs the
    reference computes for them (in float64). `sizes` overrides entries of DEFAULT_SIZES."""
    if name not in KERNEL_SPECS:
        raise KeyError(f"no reference for kernel {name!r}; expected one of: {', '.join(KERNEL_SPECS)}")
    spec = KERNEL_SPECS[name]
    unknown = set(sizes or {}) - set(DEFAULT_SIZES)
    if unknown:
        raise KeyError(f"unknown sizes {sorted(unknown)}; expected some of {sorted(DEFAULT_SIZES)}")
    args = spec.make_args(np.random.default_rng(seed), {**DEFAULT_SIZES, **(sizes or {})}, dtype)
    return args, spec.reference(_float64_copies(args))


def max_relative_error(actual, expected, mask=None, scale=0.0):
    """max |actual - expected| / max(max |expected|, scale) over the compared entries (inf
    for NaN/Inf or a wrong shape: a kernel that breaks should never look close)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if actual.shape != expected.shape:
        return math.inf
    if mask is not None:
        mask = np.broadcast_to(mask, expected.shape)
        actual, expected = actual[mask], expected[mask]
    if expected.size == 0:
        return 0.0
    err = np.abs(actual - expected).max()
    if not np.isfinite(err):
        return math.inf
    scale = max(np.abs(expected).max(), scale)
    return float(err / scale) if scale > 0 else float(err)


#: The arguments make_args draws are O(1), so a float32 kernel's rounding error is O(1e-7)
#: even on an output that is ~0 (a sum that cancels, a tiny loss): errors are measured
#: against the output's size, or against this where the output is smaller.
ERROR_FLOOR = 1.0


def compare_to_reference(name, fn, sizes=None, seed=0, dtype=np.float32):
    """Run kernel `fn` (with registry name `name`'s signature) on random arguments and return
    {output name: max relative error against the reference} (see ERROR_FLOOR). float32
    kernels land near 1e-7..1e-6; a wrong formula far above 1e-5."""
    spec = KERNEL_SPECS[name]
    args, expected = make_case(name, sizes, seed, dtype)
    returned = fn(*args.values())
    actual = {spec.outputs[0]: returned} if spec.returns else {n: args[n] for n in spec.outputs}
    masks = spec.masks(args) if spec.masks else {}
    scales = spec.scales(args) if spec.scales else {}
    return {n: max_relative_error(actual[n], expected[n], masks.get(n),
                                  scale=max(ERROR_FLOOR, scales.get(n, 0.0)))
            for n in spec.outputs if expected[n] is not None}
