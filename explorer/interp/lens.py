"""The logit lens: read the residual stream at any depth as if it were the last layer's.

    logits = logit_lens(model, "blocks.0.residual2")         # (B, T, V), float64
    for name in residual_stream_names(model.config): ...      # the stream, embedding first

The LM head only ever sees ln_f(x), so the lens applies the final layernorm and then the
tied unembedding:  logits = ln_f(x) @ wte.T.  At the last block's output this is exactly the
model's own logits; at earlier points it shows what the model "would say" if it stopped there.
Computed in float64 with the NumPy references (explorer.kernels.reference), so it is a
reference the course checks students' lenses against.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..kernels import reference as ref
from ..model.config import GPTConfig
from ..model.gpt import GPT


def residual_stream_names(config: GPTConfig) -> list[str]:
    """The residual stream in order: "encoded", then each block's residual1 (after attention)
    and residual2 (after the MLP). The last is what ln_f and the LM head read."""
    return ["encoded"] + [f"blocks.{l}.{r}" for l in range(config.n_layer)
                          for r in ("residual1", "residual2")]


def logit_lens(model: GPT, name: str, acts: Mapping[str, np.ndarray] | None = None, *,
               layernorm: bool = True, affine: bool = True) -> np.ndarray:
    """(B, T, V) float64 logits ln_f(acts[name]) @ wte.T, from model.acts (the last forward)
    or from `acts` (e.g. an ActivationCache). Leaves the activation untouched.

    layernorm=False reads the raw stream straight through the unembedding (no ln_f);
    affine=False normalises without ln_f's weight and bias."""
    acts = model.acts if acts is None else acts
    if name not in acts:
        raise KeyError(f"no activation named {name!r} to read through the lens; the residual "
                       f"stream is {residual_stream_names(model.config)}")
    C = model.config.n_embd
    x = np.asarray(acts[name], dtype=np.float64)
    if x.ndim != 3 or x.shape[-1] != C:
        raise ValueError(f"the logit lens reads a residual-stream activation of shape (B, T, "
                         f"C={C}); {name!r} has shape {x.shape}")
    p = model.params
    if layernorm:
        weight, bias = ((p["ln_f.weight"], p["ln_f.bias"]) if affine else (np.ones(C), np.zeros(C)))
        x = ref.layernorm_forward(x, weight.astype(np.float64), bias.astype(np.float64))[0]
    return ref.matmul_forward(x, p["wte"].astype(np.float64))   # weight (V, C): x @ wte.T
