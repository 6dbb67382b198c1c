"""The kernel registry: every op of the model, looked up by name at call time.

    from explorer import kernels
    kernels.names()                          # what can be swapped
    kernels.get("gelu_forward")              # the kernel in use now
    kernels.register("gelu_forward", my_fn)  # use my_fn from now on
    with kernels.use(gelu_forward=my_fn):    # ... or only inside this block
        model.forward(idx, targets)
    kernels.reset("gelu_forward")            # back to the shipped kernel (reset() for all)

The model never imports a kernel directly; it asks the registry on every call. So a new
kernel takes effect at the next step, and nothing else is recompiled.
"""
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from . import runtime as _runtime  # noqa: F401  (sets thread-pool policy before numba loads)

# isort: split
from . import adamw, attention, attention_decode, clip, crossentropy, encoder, gelu, layernorm, matmul, residual

#: A kernel: a function (compiled or plain Python) that writes its outputs into its first arguments.
Kernel = Callable[..., object]

_SHIPPED: dict[str, Kernel] = {
    "encoder_forward": encoder.encoder_forward,
    "encoder_backward": encoder.encoder_backward,
    "layernorm_forward": layernorm.layernorm_forward,
    "layernorm_backward": layernorm.layernorm_backward,
    "matmul_forward": matmul.matmul_forward,
    "matmul_backward": matmul.matmul_backward,
    "attention_forward": attention.attention_forward,
    "attention_backward": attention.attention_backward,
    "attention_decode": attention_decode.attention_decode,
    "gelu_forward": gelu.gelu_forward,
    "gelu_backward": gelu.gelu_backward,
    "residual_forward": residual.residual_forward,
    "crossentropy_forward": crossentropy.crossentropy_forward,
    "crossentropy_softmax_backward": crossentropy.crossentropy_softmax_backward,
    "softmax_forward": crossentropy.softmax_forward,
    "adamw_update": adamw.adamw_update,
    "grad_norm": clip.grad_norm,
}

#: Other shipped versions of some kernels (naive loops beside the fast default), by name.
VARIANTS: dict[str, dict[str, Kernel]] = {
    "matmul_forward": {"blas": matmul.matmul_forward, "loops": matmul.matmul_forward_loops},
    "matmul_backward": {"blas": matmul.matmul_backward, "loops": matmul.matmul_backward_loops,
                        "blas2": matmul.matmul_backward2},
    "attention_forward": {"fused": attention.attention_forward,
                          "blas": attention.attention_forward_blas,
                          "loops": attention.attention_forward_loops},
    "attention_backward": {"fused": attention.attention_backward,
                           "blas": attention.attention_backward_blas,
                           "loops": attention.attention_backward_loops},
}

_active = dict(_SHIPPED)


def names() -> list[str]:
    """Names of all swappable kernels, in the order the model first uses them."""
    return list(_SHIPPED)


def _check_name(name: str) -> None:
    if name not in _SHIPPED:
        raise KeyError(f"no kernel named {name!r}; expected one of: {', '.join(_SHIPPED)}")


def get(name: str) -> Kernel:
    """The kernel registered under `name` now."""
    _check_name(name)
    return _active[name]


def shipped(name: str) -> Kernel:
    """The kernel the package ships under `name` (whatever is registered now)."""
    _check_name(name)
    return _SHIPPED[name]


def is_shipped(name: str) -> bool:
    """True while `name` runs the package's own kernel (or one of its shipped variants)."""
    fn = get(name)
    return fn is _SHIPPED[name] or any(fn is v for v in VARIANTS.get(name, {}).values())


def swapped() -> list[str]:
    """Names of the kernels that are not the package's own now (neither the default nor a
    shipped variant); [] when every kernel is shipped. The trainer guards its steps while
    this is non-empty."""
    return [name for name, fn in _active.items()
            if fn is not _SHIPPED[name] and all(fn is not v for v in VARIANTS.get(name, {}).values())]


def register(name: str, fn: Kernel | str) -> Kernel:
    """Use `fn` for `name` from now on (until `reset`). Returns the kernel it replaced."""
    _check_name(name)
    if isinstance(fn, str):
        options = VARIANTS.get(name, {})
        if fn not in options:
            raise KeyError(f"kernel {name!r} has no shipped variant {fn!r}; "
                           f"expected one of: {', '.join(options) or '(none)'}")
        fn = options[fn]
    if not callable(fn):
        raise TypeError(f"kernel {name!r} must be callable, got {type(fn).__name__}")
    previous = _active[name]
    _active[name] = fn
    return previous


def reset(name: str | None = None) -> None:
    """Restore the shipped kernel for `name`, or for every kernel when name is None."""
    if name is None:
        _active.update(_SHIPPED)
    else:
        _check_name(name)
        _active[name] = _SHIPPED[name]


@contextmanager
def use(**overrides: Kernel | str) -> Iterator[None]:
    """Swap kernels inside a `with` block; the previous ones come back on exit, even on error.
    Values are functions or names of shipped variants: `use(matmul_forward="loops")`."""
    for name in overrides:
        _check_name(name)
    saved = {name: _active[name] for name in overrides}
    try:
        for name, fn in overrides.items():
            register(name, fn)
        yield
    finally:
        _active.update(saved)
