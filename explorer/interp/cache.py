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
    """Run model.forward(idx, targets) and copy its activations, all of them or only `names`.

    Without targets the loss ops do not run, so "probs" and "losses" are left out (their
    buffers would hold an earlier forward's values). The forward and the copies happen under
    model.lock: a training step on another thread cannot overwrite the buffers half way."""
    with model.lock:
        model.forward(idx, targets)
        recorded = [n for n in model.acts if targets is not None or n not in LOSS_NAMES]
        wanted = recorded if names is None else list(names)
        for name in wanted:
            if name not in recorded:
                why = (" (it is computed only when the forward gets targets)"
                       if name in LOSS_NAMES and name in model.acts else "")
                raise KeyError(f"no activation named {name!r} in this forward{why}; "
                               f"the model records: {recorded}")
        return ActivationCache((name, model.acts[name].copy()) for name in wanted)
