"""An activation cache: one forward pass, every activation kept under the model's own name.

    cache = cache_activations(model, idx)            # idx: token ids (B, T)
    cache["blocks.0.attn.att"]                       # (B, NH, T, T), a copy
    cache.layers("attn.att")                         # (n_layer, B, NH, T, T)

The names are model.acts's ("encoded", "blocks.{l}.ln1.out", "blocks.{l}.attn.att",
"blocks.{l}.residual2", "ln_f.out", "logits", ...): one string addresses one activation, as
TransformerLens's hook names do. The model overwrites model.acts on its next forward; the
cache holds copies, so it stays as this forward left it.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ..model.architecture import activation_shapes
from ..model.gpt import GPT

#: Buffers the model fills only when the forward gets targets (the loss ops).
LOSS_NAMES = ("probs", "losses")


class ActivationCache(dict):
    """name -> np.ndarray, the activations of one forward pass (copies, not the model's buffers)."""

    def layers(self, name: str) -> np.ndarray:
        """`blocks.{l}.<name>` of every layer l, stacked: shape (n_layer, *activation shape)."""
        found = []
        while f"blocks.{len(found)}.{name}" in self:
            found.append(self[f"blocks.{len(found)}.{name}"])
        if not found:
            kinds = sorted({key.split(".", 2)[2] for key in self if key.startswith("blocks.0.")})
            raise KeyError(f"the cache holds no 'blocks.0.{name}'; per-layer names it holds: {kinds}")
        return np.stack(found)


def cache_activations(model: GPT, idx: np.ndarray, targets: np.ndarray | None = None,
                      names: Iterable[str] | None = None) -> ActivationCache:
    """The activations of one forward pass of idx, all of them or only `names`.

    Without targets no backward can follow, so the model's lean inference forward runs
    (model.infer): only the named activations get memory of their own, the rest share scratch
    buffers (at GPT-2 124M's size and T=1024, asking for one layer's "blocks.{l}.attn.att"
    costs that layer's (B, NH, T, T), not all twelve). The loss ops do not run then, so "probs"
    and "losses" are left out. With targets, model.forward(idx, targets) runs and its buffers
    are copied. Either way the cache's arrays are its own, and the model's training record
    (model.acts) is what the last forward with targets left, under model.lock: a training step
    on another thread cannot overwrite anything half way."""
    with model.lock:
        if targets is not None:
            model.forward(idx, targets)
            recorded = list(model.acts)
        else:
            recorded = [n for n in activation_shapes(model.ops, model.config, 1, 1)]
        wanted = recorded if names is None else list(names)
        for name in wanted:
            if name not in recorded:
                why = (" (it is computed only when the forward gets targets)"
                       if name in LOSS_NAMES else "")
                raise KeyError(f"no activation named {name!r} in this forward{why}; "
                               f"the model records: {recorded}")
        if targets is not None:
            return ActivationCache((name, model.acts[name].copy()) for name in wanted)
        _, kept = model.infer(idx, keep=wanted)
        return ActivationCache(kept)
