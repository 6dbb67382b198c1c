"""The analyses as short text tables, for a notebook cell or a script's output.

    print(lens_table(model, ids, answer=paris))          # what the stream says, block by block
    print(heads_line(head_induction_scores(model, tokens)))   # "5.5 0.92  6.9 0.88 ..."
    print(patching_table(patch_residual(...), labels))   # layers x positions, normalised

Heads are written "layer.head", counted from 0, as TransformerLens writes them (5.1 is layer 5's
head 1). Token ids are shown through model.tokenizer when the model has one.
"""
from __future__ import annotations

import numpy as np

from ..model.gpt import GPT
from .cache import cache_activations
from .lens import logit_lens
from .patching import PatchingResult


def top_heads(scores: np.ndarray, k: int = 10) -> list[tuple[int, int, float]]:
    """The k highest of scores (n_layer, NH) as (layer, head, score), highest first."""
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must have shape (n_layer, NH), got {scores.shape}")
    order = np.argsort(scores, axis=None)[::-1][:k]
    return [(int(l), int(h), float(scores[l, h])) for l, h in zip(*np.unravel_index(order, scores.shape))]


def heads_line(scores: np.ndarray, k: int = 10) -> str:
    """"5.5 0.92  6.9 0.88 ...": the k highest heads and their scores."""
    return "  ".join(f"{l}.{h} {s:.2f}" for l, h, s in top_heads(scores, k))


def token_text(model: GPT, token: int) -> str:
    """repr of the token's text, or "#id" when the model has no tokenizer."""
    return repr(model.tokenizer.decode([int(token)])) if model.tokenizer is not None else f"#{int(token)}"


def lens_table(model: GPT, ids, answer: int, position: int = -1) -> str:
    """At each block's output (and the embedding): the lens's most likely next token at
    `position` of the prompt ids (T,), and the probability and rank of `answer` there."""
    ids = np.atleast_2d(np.asarray(ids))
    n_layer = model.config.n_layer
    names = ["encoded"] + [f"blocks.{l}.residual2" for l in range(n_layer)]
    acts = cache_activations(model, ids[:1], names=names)
    rows = [f"{'after':>10}  {'top token':>16}  p({token_text(model, answer)})  rank"]
    for name in names:
        logits = logit_lens(model, name, acts)[0, position]
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        rank = int(np.sum(logits > logits[answer])) + 1
        where = "embedding" if name == "encoded" else f"block {name.split('.')[1]}"
        rows.append(f"{where:>10}  {token_text(model, int(np.argmax(logits))):>16}  "
                    f"{probs[answer]:8.3f}  {rank:5d}")
    return "\n".join(rows)


def patching_table(result: PatchingResult, columns: list[str]) -> str:
    """result.normalised (n_layer, K) as a table, one row per layer, columns labelled."""
    values = result.normalised
    if values.shape[1] != len(columns):
        raise ValueError(f"{len(columns)} column labels for a result with {values.shape[1]} columns")
    width = max(6, *(len(c) for c in columns))
    lines = [f"clean {result.clean:+.3f}, corrupted {result.corrupted:+.3f}; each cell: "
             f"(patched - corrupted) / (clean - corrupted)",
             "layer " + " ".join(f"{c[:width]:>{width}}" for c in columns)]
    lines += [f"{l:5d} " + " ".join(f"{v:>{width}.2f}" for v in row) for l, row in enumerate(values)]
    return "\n".join(lines)
