"""Activation patching: which activations carry the information that tells a clean prompt's
answer from a corrupted one's?

    clean     = ids("When Mary and John went to the store, John gave a drink to")
    corrupted = ids("When Mary and John went to the store, Mary gave a drink to")   # same length
    result = patch_residual(model, clean, corrupted, answer=mary, other=john)
    result.patched          # (n_layer, T): the metric with resid_pre of block l at position t
    result.normalised       #   taken from the clean run: 0 = the corrupted run's, 1 = the clean's
    patch_heads(model, clean, corrupted, mary, john).patched      # (n_layer, NH): one head's output

The metric is the logit difference logit(answer) - logit(other) at the last position (the mean
over the batch when the prompts are (B, T)). Each patched value is a run of the corrupted
prompt in which one activation (one position of the residual stream, or one head's output z
before attn.proj) is replaced by its value in the clean run (TransformerLens's "denoising"
direction). The forward is the model's own, with a hook (hooks.py).

Whatever comes before a patch point is the same in every run that patches there or later: the
corrupted prompt runs once, keeping the residual stream entering each block, and a patched run
starts at the patch's block from that stream (model.infer_from), not at the embedding. ln_f and
the LM head, which act on each position alone, run on the last position only: the metric reads
no other. Each run is the model's inference forward: model.acts / model.trace are not touched.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..model.architecture import block_input
from ..model.gpt import GPT
from .cache import cache_activations
from .hooks import hooks, resid_pre_name


def logit_difference(logits: np.ndarray, answer, other, position: int = -1) -> float:
    """Mean over the batch of logits[b, position, answer] - logits[b, position, other];
    answer and other are token ids, or one per row (B,)."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 3:
        raise ValueError(f"logits must have shape (B, T, V), got {logits.shape}")
    rows = np.arange(logits.shape[0])
    last = logits[:, position]
    return float(np.mean(last[rows, answer] - last[rows, other]))


@dataclass
class PatchingResult:
    patched: np.ndarray    # the metric with each single activation patched in from the clean run
    clean: float           # the metric on the clean prompt
    corrupted: float       # the metric on the corrupted prompt, nothing patched

    @property
    def normalised(self) -> np.ndarray:
        """(patched - corrupted) / (clean - corrupted): 1 where one patch restores the clean
        answer fully, 0 where it changes nothing."""
        gap = self.clean - self.corrupted
        if gap == 0:
            raise ZeroDivisionError("the clean and corrupted prompts give the same logit "
                                    "difference, so there is nothing to restore")
        return (self.patched - self.corrupted) / gap


def _prompts(clean, corrupted):
    clean, corrupted = np.atleast_2d(np.asarray(clean)), np.atleast_2d(np.asarray(corrupted))
    if clean.shape != corrupted.shape:
        raise ValueError(f"the clean and corrupted prompts must have the same shape (token for "
                         f"token), got {clean.shape} and {corrupted.shape}")
    return clean, corrupted


#: at most this many logits (rows x T x V, float32) in one batch of patched runs, had it logits
#: at every position (it computes them at the last only, unless it patches ln_f or the logits)
MAX_LOGITS_PER_FORWARD = 2**26


def patch_activations(model: GPT, clean, corrupted, answer, other,
                      patches: dict[tuple[int, ...], tuple[str, tuple]]) -> PatchingResult:
    """The corrupted prompt run once per entry of `patches`, {index in result.patched: (hook
    name, where)}, with activation[where] replaced by the clean run's: the general form of
    patch_residual and patch_heads (e.g. {(l,): (f"blocks.{l}.mlp.proj", (...,))} patches
    each MLP's output everywhere).

    The runs of one hook name go through the model together, as one batch whose block k of B
    rows is the corrupted prompt with patch k: one forward instead of many (weights read once),
    the same numbers up to float32 rounding (each row of a batch is computed on its own). Each
    starts at the block of its hook name, from the corrupted run's stream entering it."""
    clean, corrupted = _prompts(clean, corrupted)
    B, T = clean.shape
    names = sorted({name for name, _ in patches.values()})
    cache = cache_activations(model, clean, names=names + ["logits"])
    starts = {name: _start_layer(model, name) for name in names}
    corrupted_logits, streams = model.infer(corrupted, keep=sorted({block_input(l) for l in starts.values()}))
    patched = np.zeros(tuple(np.max(list(patches), axis=0) + 1))
    per_forward = max(1, MAX_LOGITS_PER_FORWARD // (B * T * model.config.vocab_size))
    for name in names:
        layer = starts[name]
        group = [(index, where) for index, (n, where) in patches.items() if n == name]
        for first in range(0, len(group), per_forward):
            chunk = group[first:first + per_forward]

            def patch(x, chunk=chunk, clean_value=cache[name]):
                for k, (_, where) in enumerate(chunk):
                    x[k * B:(k + 1) * B][where] = clean_value[where]
            stream = np.tile(streams[block_input(layer)], (len(chunk), 1, 1))
            if name == block_input(layer):     # the patch is the stream the run starts from
                patch(stream)
            with hooks(model, {} if name == block_input(layer) else {name: patch}):
                last = _last_logits_from(model, layer, stream)
            for k, (index, _) in enumerate(chunk):
                patched[index] = logit_difference(last[k * B:(k + 1) * B], answer, other)
    return PatchingResult(patched, logit_difference(cache["logits"], answer, other),
                          logit_difference(corrupted_logits, answer, other))


def _start_layer(model, name):
    """The last block whose input stream the forward writes no later than `name`: a run from
    there computes `name` (or, when `name` is that stream, starts from it)."""
    written_at = {x: i for i, op in enumerate(model.ops) for x in op.outputs.values()}
    return max(l for l in range(model.config.n_layer + 1)
               if written_at[block_input(l)] <= written_at[name])


def _last_logits_from(model, layer, stream):
    """Logits (rows, 1, V) at the last position of the forward from block `layer` on `stream`."""
    L = model.config.n_layer
    if layer == L:                  # a patch in ln_f or the logits: every position, as hooked
        return model.infer_from(L, stream)[0][:, -1:]
    final, _ = model.infer_from(layer, stream, to_layer=L)
    return model.infer_from(L, final[:, -1:])[0]


def patch_residual(model: GPT, clean, corrupted, answer, other) -> PatchingResult:
    """patched (n_layer, T): the residual stream entering block l (resid_pre), at position t
    only, taken from the clean run."""
    T = np.atleast_2d(np.asarray(clean)).shape[1]
    patches = {(l, t): (resid_pre_name(l, model), (slice(None), t))
               for l in range(model.config.n_layer) for t in range(T)}
    return patch_activations(model, clean, corrupted, answer, other, patches)


def patch_heads(model: GPT, clean, corrupted, answer, other) -> PatchingResult:
    """patched (n_layer, NH): head h of layer l's output z (every position), taken from the
    clean run; z is that head's slice of blocks.{l}.attn.out, before attn.proj mixes the heads."""
    c = model.config
    hs = c.n_embd // c.n_head
    patches = {(l, h): (f"blocks.{l}.attn.out", (..., slice(h * hs, (h + 1) * hs)))
               for l in range(c.n_layer) for h in range(c.n_head)}
    return patch_activations(model, clean, corrupted, answer, other, patches)
