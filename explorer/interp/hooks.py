"""Hook points: run the model's own forward while reading or replacing activations by name.

    def zero_head_1(z):                              # z: (B, T, C), changed in place
        z[..., hs:2 * hs] = 0.0
    logits = run_with_hooks(model, idx, {"blocks.3.attn.out": zero_head_1})

Every activation the forward writes is a hook point, under the name it has in model.acts
("encoded", "blocks.{l}.attn.att", "blocks.{l}.attn.out", "blocks.{l}.residual2", ...), as
TransformerLens's hook names are. A hook is called right after the op that writes its
activation, with that activation's buffer; what it writes there is what every later op reads.
The forward is the model's own (model.hooks, see GPT.forward): there is no second copy of the
architecture here. Generation (model.generate, with its KV cache) does not call hooks.

TransformerLens's names, in ours: hook_embed + hook_pos_embed = "encoded"; blocks.l.hook_resid_pre
= resid_pre_name(l); hook_resid_mid = "blocks.{l}.residual1"; hook_resid_post =
"blocks.{l}.residual2"; attn.hook_pattern = "blocks.{l}.attn.att"; attn.hook_z =
"blocks.{l}.attn.out" (the heads side by side, (B, T, NH * hs)); hook_attn_out =
"blocks.{l}.attn.proj"; hook_mlp_out = "blocks.{l}.mlp.proj".
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import numpy as np

from ..model.architecture import activation_shapes, block_input
from ..model.gpt import GPT

Hook = Callable[[np.ndarray], None]


def hook_points(model: GPT) -> list[str]:
    """Every name a hook can be put on, in the order the forward writes them."""
    return list(activation_shapes(model.ops, model.config, 1, 1))


def resid_pre_name(layer: int, model: GPT) -> str:
    """The residual stream entering block `layer`: "encoded" for block 0, else the previous
    block's output. layer == n_layer names the stream after the last block (what ln_f reads)."""
    n_layer = model.config.n_layer
    if not 0 <= layer <= n_layer:
        raise ValueError(f"layer must be in [0, n_layer={n_layer}], got {layer}")
    return block_input(layer)


@contextmanager
def hooks(model: GPT, fns: Mapping[str, Hook]) -> Iterator[GPT]:
    """Within the block, model.forward and model.infer call fns[name](activation) after writing each name.
    Holds model.lock throughout (no other thread runs the model with the hooks in), and puts
    back whatever hooks were there before, even when the block raises."""
    known = hook_points(model)
    for name, fn in fns.items():
        if name not in known:
            raise KeyError(f"no hook point named {name!r}; the forward writes: {known}")
        if not callable(fn):
            raise TypeError(f"the hook for {name!r} must be a function of the activation "
                            f"array, got {type(fn).__name__}")
    with model.lock:
        before = model.hooks
        model.hooks = {**before, **fns}
        try:
            yield model
        finally:
            model.hooks = before


def run_with_hooks(model: GPT, idx: np.ndarray, fns: Mapping[str, Hook]) -> np.ndarray:
    """Logits (B, T, V) of the model's inference forward (model.infer: no backward record) on
    idx, with the hooks in `fns`; the logits are a new array, the caller's to keep."""
    with hooks(model, fns):
        logits, _ = model.infer(idx)
        return logits


def replace_with(value: np.ndarray, where: tuple = (...,)) -> Hook:
    """A hook that writes `value` over activation[where] (e.g. a clean run's cached
    activation, or zeros): the building block of patching and ablation."""
    def hook(activation: np.ndarray) -> None:
        activation[where] = value
    return hook
