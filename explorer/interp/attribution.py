"""Direct logit attribution: how much each component's output, read straight through the
final layernorm and the unembedding, pushes a logit (or a logit difference) up or down.

    direction = logit_direction(model, answer=mary, other=john)      # (C,): wte[mary] - wte[john]
    dla = logit_attribution(model, idx, direction)                    # at the last position
    dla.labels, dla.components        # "embed", "pos_embed", "blocks.0.attn", "blocks.0.mlp", ...
    dla.heads                         # (B, n_layer, NH): each head through its slice of attn.proj

The residual stream after the last block is a sum of the components' outputs:
    x = wte[idx] + wpe[t] + sum over layers l of (attn_l + mlp_l),
    attn_l = sum over heads h of z_lh @ W_proj[:, h].T  +  b_proj        (z_lh: head h's output)
The LM head reads ln_f(x) . d = ((x - mean x) * rstd * w + b) . d for a direction d. That is
linear in x except for rstd = 1 / sqrt(var x + eps), which depends on the whole sum. The
convention (TransformerLens's too): freeze rstd at its value for the real final residual, so
a component c contributes ((c - mean c) * rstd * w) . d. The contributions then add up exactly
to the model's logit (difference) minus the constant b . d (`ln_f_bias`).
Computed in float64 from one forward's activations.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..kernels import reference as ref
from ..model.gpt import GPT
from .cache import cache_activations


def logit_direction(model: GPT, answer: int, other: int | None = None) -> np.ndarray:
    """(C,) float64: the unembedding of `answer` (its logit is ln_f(x) . wte[answer]), or
    wte[answer] - wte[other] for the logit difference answer - other."""
    V = model.config.vocab_size
    for what, token in (("answer", answer), ("other", other)):
        if token is not None and not (isinstance(token, (int, np.integer)) and 0 <= token < V):
            raise ValueError(f"{what} must be a token id in [0, {V - 1}], got {token!r}")
    wte = model.params["wte"].astype(np.float64)
    return wte[answer] - (0.0 if other is None else wte[other])


@dataclass
class LogitAttribution:
    labels: list[str]        # "embed", "pos_embed", then "blocks.{l}.attn", "blocks.{l}.mlp" per layer
    components: np.ndarray   # (B, len(labels)): each component's direct contribution
    heads: np.ndarray        # (B, n_layer, NH): each attention head's (without b_proj)
    attn_bias: np.ndarray    # (B, n_layer): b_proj's part of each layer's attention
    ln_f_bias: np.ndarray    # (B,): ln_f.bias . direction, the constant no component owns
    logit: np.ndarray        # (B,): the model's own logit (difference) at that position

    def layer(self, kind: str) -> np.ndarray:
        """(B, n_layer): "attn" or "mlp" of every layer."""
        if kind not in ("attn", "mlp"):
            raise ValueError(f"kind is 'attn' or 'mlp', got {kind!r}")
        return self.components[:, [i for i, x in enumerate(self.labels) if x.endswith("." + kind)]]


def component_outputs(model: GPT, acts, position: int = -1) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(labels, outputs (B, K, C), head outputs (B, n_layer, NH, C)) at one position, float64,
    from a forward's activations (an ActivationCache or model.acts)."""
    c = model.config
    hs = c.n_embd // c.n_head
    p = {name: value.astype(np.float64) for name, value in model.params.items()}
    T = acts["encoded"].shape[1]
    t = range(T)[position]                                # raises IndexError when out of range
    labels, outputs, heads = ["embed", "pos_embed"], [p["wte"][acts["idx"][:, t]]], []
    outputs.append(np.broadcast_to(p["wpe"][t], outputs[0].shape))
    for l in range(c.n_layer):
        z = acts[f"blocks.{l}.attn.out"][:, t].astype(np.float64).reshape(-1, c.n_head, hs)
        w = p[f"blocks.{l}.attn.proj.weight"].reshape(c.n_embd, c.n_head, hs)   # out = z @ w.T
        heads.append(np.einsum("bhs,chs->bhc", z, w))
        labels += [f"blocks.{l}.attn", f"blocks.{l}.mlp"]
        outputs += [acts[f"blocks.{l}.attn.proj"][:, t], acts[f"blocks.{l}.mlp.proj"][:, t]]
    return labels, np.stack(outputs, axis=1).astype(np.float64), np.stack(heads, axis=1)


def logit_attribution(model: GPT, idx: np.ndarray, direction: np.ndarray,
                      position: int = -1) -> LogitAttribution:
    """Each component's direct contribution to `direction` (C,) or one per row (B, C), at
    `position` of every row of idx (B, T), with ln_f's scale frozen at the final residual's
    (see the module's docstring)."""
    c = model.config
    idx = np.atleast_2d(np.asarray(idx))
    names = (["encoded", f"blocks.{c.n_layer - 1}.residual2"]
             + [f"blocks.{l}.{x}" for l in range(c.n_layer) for x in ("attn.out", "attn.proj", "mlp.proj")])
    acts = dict(cache_activations(model, idx, names=names), idx=idx)
    direction = np.asarray(direction, dtype=np.float64)
    if direction.shape not in ((c.n_embd,), (idx.shape[0], c.n_embd)):
        raise ValueError(f"direction must have shape (C,) = ({c.n_embd},) or (B, C) = "
                         f"{(idx.shape[0], c.n_embd)}, got {direction.shape}")
    labels, outputs, heads = component_outputs(model, acts, position)
    t = range(idx.shape[1])[position]
    final = acts[f"blocks.{c.n_layer - 1}.residual2"][:, t].astype(np.float64)          # (B, C)
    _, _, rstd = ref.layernorm_forward(final, np.ones(c.n_embd), np.zeros(c.n_embd))   # (B,)
    gain = model.params["ln_f.weight"].astype(np.float64)
    d = np.broadcast_to(direction, final.shape)

    def through_ln_f(x):       # x (B, ..., C): ((x - mean x) * rstd * w) . d, rstd frozen
        centred = x - x.mean(axis=-1, keepdims=True)
        shape = (-1,) + (1,) * (x.ndim - 2)
        return np.einsum("b...c,bc->b...", centred * gain, d) * rstd.reshape(shape)

    ln_f_bias = np.einsum("c,bc->b", model.params["ln_f.bias"].astype(np.float64), d)
    b_proj = np.stack([model.params[f"blocks.{l}.attn.proj.bias"] for l in range(c.n_layer)])
    logit = through_ln_f(final) + ln_f_bias
    return LogitAttribution(labels, through_ln_f(outputs), through_ln_f(heads),
                            through_ln_f(np.broadcast_to(b_proj.astype(np.float64), (len(final),) + b_proj.shape)),
                            ln_f_bias, logit)
