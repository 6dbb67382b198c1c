"""The cases a kernel is checked on: random arguments for every registry kernel, and what
the reference (explorer/kernels/reference.py) says its outputs should be.

KERNEL_SPECS says, for every name in the kernel registry, how to build random arguments in
the shipped kernel's order (outputs first, then inputs) and what the outputs should be;
`make_case` draws one such case, `random_cases` the lab's list of them (CASES: default and
edge sizes), and `compare_to_reference(name, fn)` runs a candidate kernel on one:

    from explorer.lab import cases
    cases.compare_to_reference("gelu_forward", my_gelu)   # {"out": 3.1e-08}

check_kernel (check.py) runs a candidate on these and explains what is wrong.
"""
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..kernels import reference as ref

# ============================================================================= sizes
#: Sizes used where a check does not give them: small, and not multiples of 8 on purpose.
#: "bias" says whether matmul gets a bias; N and S size the optimizer's flat buffer.
DEFAULT_SIZES = {"B": 2, "T": 5, "C": 12, "NH": 3, "V": 11, "maxT": 7, "OC": 9, "bias": True,
                 "N": 40, "S": 4}

#: The random cases check_kernel runs: the defaults, then edge sizes (one row of one token,
#: odd sizes and a single head, a longer sequence with several heads).
CASES = [
    ("default sizes", {}),
    ("B=1 T=1", {"B": 1, "T": 1, "maxT": 3}),
    ("odd sizes, 1 head, no bias", {"B": 3, "T": 7, "C": 5, "NH": 1, "V": 13, "OC": 3, "maxT": 9,
                                    "N": 33, "S": 2, "bias": False}),
    ("T=16, 4 heads", {"B": 2, "T": 16, "C": 32, "NH": 4, "V": 67, "OC": 48, "maxT": 16,
                       "N": 1000, "S": 7}),
]
#: The sizes check_kernel times a kernel on.
TIMING_SIZES = {"B": 4, "T": 64, "C": 128, "NH": 4, "V": 512, "maxT": 64, "OC": 512,
                "N": 200_000, "S": 8}

#: The arguments make_args draws are O(1), so a float32 kernel's rounding error is O(1e-7)
#: even on an output that is ~0 (a sum that cancels, a tiny loss): errors are measured
#: against the output's size, or against this where the output is smaller.
ERROR_FLOOR = 1.0


# ============================================================================= what to check, per kernel
@dataclass(frozen=True)
class KernelSpec:
    """How to check one registry kernel against its reference (explorer/kernels/reference.py).

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
    dwte, dwpe = ref.encoder_backward(a["dout"], a["idx"], a["dwte"].shape[0])
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
    _, mean, rstd = ref.layernorm_forward(inp.astype(np.float64), weight, bias)
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
    dinp, dweight, dbias = ref.matmul_backward(a["dout"], a["inp"], a["weight"])
    return {"dinp": dinp, "dweight": dweight, "dbias": None if a["dbias"] is None else dbias}


def _attention_args(rng, s, dtype, backward):
    B, T, (NH, C) = s["B"], s["T"], _heads_and_size(s)
    qkv = _normal(rng, (B, T, 3 * C), dtype)
    scratch = {name: _normal(rng, (B, NH, T, T), dtype) for name in ("preatt", "att")}
    if not backward:
        return {"out": _normal(rng, (B, T, C), dtype), **scratch, "qkv": qkv, "n_head": NH}
    att = ref.attention_forward(qkv.astype(np.float64), NH)[2].astype(dtype)
    return {"dqkv": _normal(rng, (B, T, 3 * C), dtype), "dpreatt": scratch["preatt"],
            "datt": scratch["att"], "dout": _normal(rng, (B, T, C), dtype), "qkv": qkv,
            "att": att, "n_head": NH}


def _attention_decode_args(rng, s, dtype):
    """qkv of T positions, out for the last (T+1)//2 of them (one row when T is 1 or 2)."""
    B, T, (NH, C) = s["B"], s["T"], _heads_and_size(s)
    return {"out": _normal(rng, (B, (T + 1) // 2, C), dtype), "qkv": _normal(rng, (B, T, 3 * C), dtype),
            "n_head": NH}


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
            "probs": ref.softmax_forward(logits.astype(np.float64)).astype(dtype), "targets": targets}


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
        lambda a: {"out": ref.encoder_forward(a["idx"], a["wte"], a["wpe"])}, ("out",)),
    "encoder_backward": KernelSpec(
        lambda rng, s, dt: _encoder_args(rng, s, dt, backward=True),
        _encoder_backward_expected, ("dwte", "dwpe")),
    "layernorm_forward": KernelSpec(
        lambda rng, s, dt: _layernorm_args(rng, s, dt, backward=False),
        lambda a: _named(("out", "mean", "rstd"), ref.layernorm_forward(a["inp"], a["weight"], a["bias"])),
        ("out", "mean", "rstd")),
    "layernorm_backward": KernelSpec(
        lambda rng, s, dt: _layernorm_args(rng, s, dt, backward=True),
        lambda a: _named(("dinp", "dweight", "dbias"), ref.layernorm_backward(
            a["dout"], a["inp"], a["weight"], a["mean"], a["rstd"])),
        ("dinp", "dweight", "dbias"),
        # dinp = rstd * (g - mean(g) - norm * mean(g * norm)), g = dout * weight; with C <= 2
        # the terms cancel to ~0 (a normalised row of two is +-1 whatever x is)
        scales=lambda a: {"dinp": np.abs(a["rstd"][..., None] * a["dout"] * a["weight"]).max()}),
    "matmul_forward": KernelSpec(
        lambda rng, s, dt: _matmul_args(rng, s, dt, backward=False),
        lambda a: {"out": ref.matmul_forward(a["inp"], a["weight"], a["bias"])}, ("out",)),
    "matmul_backward": KernelSpec(
        lambda rng, s, dt: _matmul_args(rng, s, dt, backward=True),
        _matmul_backward_expected, ("dinp", "dweight", "dbias")),
    "attention_forward": KernelSpec(
        lambda rng, s, dt: _attention_args(rng, s, dt, backward=False),
        lambda a: _named(("out", "preatt", "att"), ref.attention_forward(a["qkv"], a["n_head"])),
        ("out", "preatt", "att"),
        masks=lambda a: {"preatt": _causal(a["qkv"].shape[1])}),
    "attention_backward": KernelSpec(
        lambda rng, s, dt: _attention_args(rng, s, dt, backward=True),
        lambda a: _named(("dqkv", "dpreatt", "datt"), ref.attention_backward(
            a["dout"], a["qkv"], a["att"], a["n_head"])),
        ("dqkv", "dpreatt", "datt"),
        # dpreatt and datt are the kernel's scratch; only t2 <= t is defined
        masks=lambda a: {n: _causal(a["qkv"].shape[1]) for n in ("dpreatt", "datt")}),
    "attention_decode": KernelSpec(
        _attention_decode_args,
        lambda a: {"out": ref.attention_decode(a["qkv"], a["n_head"], a["out"].shape[1])}, ("out",)),
    "gelu_forward": KernelSpec(
        lambda rng, s, dt: _elementwise_args(rng, s, dt, ("out", "inp")),
        lambda a: {"out": ref.gelu_forward(a["inp"])}, ("out",)),
    "gelu_backward": KernelSpec(
        lambda rng, s, dt: _elementwise_args(rng, s, dt, ("dinp", "inp", "dout")),
        lambda a: {"dinp": ref.gelu_backward(a["inp"], a["dout"])}, ("dinp",)),
    "residual_forward": KernelSpec(
        lambda rng, s, dt: _elementwise_args(rng, s, dt, ("out", "inp1", "inp2")),
        lambda a: {"out": ref.residual_forward(a["inp1"], a["inp2"])}, ("out",)),
    "crossentropy_forward": KernelSpec(
        lambda rng, s, dt: _crossentropy_args(rng, s, dt, "forward"),
        lambda a: _named(("losses", "probs"), ref.crossentropy_forward(a["logits"], a["targets"])),
        ("losses", "probs"),
        # a loss is logsumexp(logits) - logits[target]: near 0 when the target wins by far
        scales=lambda a: {"losses": np.abs(a["logits"]).max()}),
    "crossentropy_softmax_backward": KernelSpec(
        lambda rng, s, dt: _crossentropy_args(rng, s, dt, "backward"),
        lambda a: {"dlogits": ref.crossentropy_softmax_backward(a["dlosses"], a["probs"], a["targets"])},
        ("dlogits",)),
    "softmax_forward": KernelSpec(
        lambda rng, s, dt: _crossentropy_args(rng, s, dt, "softmax"),
        lambda a: {"probs": ref.softmax_forward(a["logits"])}, ("probs",)),
    "adamw_update": KernelSpec(
        lambda rng, s, dt: _adamw_args(rng, s, dt),
        lambda a: _named(("params", "m", "v"), ref.adamw_update(*a.values())), ("params", "m", "v")),
    "grad_norm": KernelSpec(
        lambda rng, s, dt: {"grads": _normal(rng, (s["N"],), dt)},
        lambda a: {"norm": ref.grad_norm(a["grads"])}, ("norm",), returns=True),
}


# ============================================================================= drawing cases
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


@dataclass
class Case:
    """One set of arguments a candidate kernel is run on, and what it should write."""
    label: str
    args: dict              # the kernel's arguments, in order (outputs hold stale values)
    expected: dict          # output name -> what it should be afterwards
    masks: dict             # output name -> bool array of the entries that matter
    scales: dict            # output name -> magnitude errors are measured against
    floor: float = ERROR_FLOOR


def random_cases(name, cases=CASES, seed=0):
    """[Case] for kernel `name`: one per (label, sizes) in `cases`, drawn with seeds seed, seed + 1, ..."""
    spec = KERNEL_SPECS[name]
    result = []
    for i, (label, sizes) in enumerate(cases):
        args, expected = make_case(name, sizes, seed=seed + i)
        result.append(Case(label, args, expected, spec.masks(args) if spec.masks else {},
                           spec.scales(args) if spec.scales else {}))
    return result


# ============================================================================= comparing
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
