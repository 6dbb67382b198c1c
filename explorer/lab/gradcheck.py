"""Finite-difference checks of a backward kernel, independent of the reference backward.

A backward kernel returns dL/dx for L = sum(dout * forward(x)). For a random direction d,
calculus says

    <dL/dx, d>  =  (L(x + h d) - L(x - h d)) / 2h  + O(h^2)

and the right side needs only the reference *forward* (in float64). So each gradient the
candidate writes is checked along a few random directions against central differences.
"""
from dataclasses import dataclass

import numpy as np

from ..kernels import reference as ref

STEP = 1e-5             # h; float64 central differences are then good to ~1e-9
DIRECTIONS = 3
TOLERANCE = 1e-4        # |<g, d> - fd| / (|g| |d|); float32 kernels land near 1e-7


@dataclass(frozen=True)
class Derivative:
    """How one gradient of a backward kernel is defined: forward(args, value) -> the
    float64 forward output that `upstream` (a backward argument) multiplies, when input
    `wrt` takes `value`; start(args) -> the input's current value."""
    gradient: str
    wrt: str
    upstream: str
    start: object
    forward: object
    baseline: str = None    # a gradient buffer the kernel adds into (its old value is subtracted)


def _layernorm(wrt):
    def forward(a, value):
        x = {"inp": a["inp"], "weight": a["weight"], "bias": np.zeros_like(a["weight"]), wrt: value}
        return ref.layernorm_forward(x["inp"], x["weight"], x["bias"])[0]
    return forward


def _matmul(wrt):
    def forward(a, value):
        x = {"inp": a["inp"], "weight": a["weight"], "bias": np.zeros(a["weight"].shape[0]), wrt: value}
        return ref.matmul_forward(x["inp"], x["weight"], x["bias"])
    return forward


def _encoder(wrt):
    def forward(a, value):
        V, C = a["dwte"].shape
        x = {"wte": np.zeros((V, C)), "wpe": np.zeros(a["dwpe"].shape), wrt: value}
        return ref.encoder_forward(a["idx"], x["wte"], x["wpe"])
    return forward


def _zeros_like(name):
    return lambda a: np.zeros(a[name].shape)


def _current(wrt):
    """The input's value; a bias is not an argument of the backward (the gradient doesn't
    depend on it), so it starts at zeros shaped like its gradient."""
    return lambda a: a[wrt] if wrt in a else np.zeros(a["d" + wrt].shape)


DERIVATIVES = {
    "gelu_backward": [Derivative("dinp", "inp", "dout", lambda a: a["inp"],
                                 lambda a, x: ref.gelu_forward(x))],
    "layernorm_backward": [Derivative(grad, wrt, "dout", _current(wrt), _layernorm(wrt))
                           for grad, wrt in (("dinp", "inp"), ("dweight", "weight"), ("dbias", "bias"))],
    "matmul_backward": [Derivative(grad, wrt, "dout", _current(wrt), _matmul(wrt))
                        for grad, wrt in (("dinp", "inp"), ("dweight", "weight"), ("dbias", "bias"))],
    "attention_backward": [Derivative("dqkv", "qkv", "dout", lambda a: a["qkv"],
                                      lambda a, x: ref.attention_forward(x, a["n_head"])[0])],
    "crossentropy_softmax_backward": [Derivative(
        # softmax(log p) = p, so logits = log(probs) reproduces the forward the cache came from
        "dlogits", "logits", "dlosses", lambda a: np.log(a["probs"]),
        lambda a, x: ref.crossentropy_forward(x, a["targets"])[0])],
    "encoder_backward": [Derivative("dwte", "wte", "dout", _zeros_like("dwte"), _encoder("wte"),
                                    baseline="dwte"),
                         Derivative("dwpe", "wpe", "dout", _zeros_like("dwpe"), _encoder("wpe"))],
}


@dataclass
class GradientCheck:
    gradient: str
    error: float            # worst |<g, d> - fd| / (|g| |d|) over the directions
    passed: bool


def check_gradients(name, args, written, seed=0):
    """[GradientCheck] for backward kernel `name`, given its float32 `args` before the call
    and the outputs it `written` (name -> array). [] for kernels without derivatives here."""
    rng = np.random.default_rng(seed)
    a = {k: (v.astype(np.float64) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v)
         for k, v in args.items()}
    results = []
    for d in DERIVATIVES.get(name, []):
        if a.get(d.gradient) is None:           # e.g. matmul without a bias
            continue
        grad = np.asarray(written[d.gradient], np.float64)
        if d.baseline:
            grad = grad - a[d.baseline]
        upstream, x0 = a[d.upstream], d.start(a)
        worst = 0.0
        for _ in range(DIRECTIONS):
            direction = rng.standard_normal(x0.shape)
            loss = lambda value: float(np.sum(upstream * d.forward(a, value)))  # noqa: E731, B023 (called here)
            fd = (loss(x0 + STEP * direction) - loss(x0 - STEP * direction)) / (2 * STEP)
            analytic = float(np.sum(grad * direction))
            scale = np.linalg.norm(grad) * np.linalg.norm(direction)
            error = abs(analytic - fd) / max(scale, abs(fd), 1e-12)
            worst = max(worst, error if np.isfinite(error) else np.inf)
        results.append(GradientCheck(d.gradient, worst, worst <= TOLERANCE))
    return results
