"""The exercise of notebooks/08_open_weights.ipynb: activation patching, written by hand.

    patch_residual(model, clean, corrupted, answer, other)    (n_layer, T): the logit difference
        logit(answer) - logit(other) at the last position of the corrupted prompt, when the
        residual stream entering block l at position t is taken from the clean run

The check compares with explorer.interp.patch_residual on a small random model and, when the
answer is wrong, tries the usual slips (the stream after the block instead of before it, every
position at once, patching the other way round, the normalised score) to say which it was.
"""
import numpy as np

from .. import interp
from ..model.config import GPTConfig
from ..model.gpt import GPT
from .feedback import Mismatch, call, expect_array, expect_close
from .registry import exercise


def _case():
    """A small random model, whose logits depend visibly on every block, and two prompts
    (1, T) that differ at one position."""
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=16, vocab_size=11, block_size=8), seed=8)
    rng = np.random.default_rng(8)
    for name, p in model.params.items():
        scale = 0.3 if name in ("wte", "wpe") or name.endswith(".bias") else 1.0 / np.sqrt(p.shape[-1])
        p[...] = (1.0 if ".ln" in name or name.startswith("ln_f") else 0.0) + rng.normal(0.0, scale, p.shape)
    clean = rng.integers(0, 11, (1, 6))
    corrupted = clean.copy()
    corrupted[0, 2] = (clean[0, 2] + 5) % 11
    return model, clean, corrupted, 3, 7


def _slips(model, clean, corrupted, answer, other):
    """(patched values, what went wrong) for the usual wrong loops."""
    L, T = model.config.n_layer, clean.shape[1]
    post = {(l, t): (f"blocks.{l}.residual2", (slice(None), t)) for l in range(L) for t in range(T)}
    whole = {(l, t): (interp.resid_pre_name(l, model), (...,)) for l in range(L) for t in range(T)}
    right = interp.patch_residual(model, clean, corrupted, answer, other)
    return [
        (interp.patch_activations(model, clean, corrupted, answer, other, post).patched,
         "you patched the stream *after* block l (blocks.{l}.residual2); row l is the stream "
         "entering block l: 'encoded' for block 0, blocks.{l-1}.residual2 after that"),
        (interp.patch_activations(model, clean, corrupted, answer, other, whole).patched,
         "you replaced every position of the stream at once; patch only position t (x[:, t])"),
        (interp.patch_residual(model, corrupted, clean, answer, other).patched,
         "you ran the clean prompt with activations from the corrupted run; run the corrupted "
         "prompt and patch in the clean run's activations"),
        (right.normalised, "you returned the normalised score; return the logit difference "
                           "itself (the notebook normalises it afterwards)"),
    ]


@exercise("open_weights.patch_residual", "Activation patching of the residual stream",
          "patch_residual(model, clean, corrupted, answer, other)",
          hint="Cache the clean run's residual stream with cache_activations(model, clean, "
               "names=...). For each layer l and position t, run_with_hooks(model, corrupted, "
               "{name: hook}) with a hook that copies the clean value into x[:, t], where name "
               "is 'encoded' for l = 0 and f'blocks.{l-1}.residual2' after; record "
               "logits[0, -1, answer] - logits[0, -1, other].")
def _check_patch_residual(patch_residual):
    model, clean, corrupted, answer, other = _case()
    shape = (model.config.n_layer, clean.shape[1])
    what = f"patch_residual(model, clean, corrupted, {answer}, {other}) with prompts of shape {clean.shape}"
    got = expect_array(call(patch_residual, model, clean.copy(), corrupted.copy(), answer, other,
                            what=what), what, shape)
    expected = interp.patch_residual(model, clean, corrupted, answer, other)
    if not np.allclose(got, expected.patched, atol=1e-4, rtol=1e-4):
        for value, explanation in _slips(model, clean, corrupted, answer, other):
            if np.allclose(got, value, atol=1e-4, rtol=1e-4):
                raise Mismatch(f"{what} returned {np.round(got, 3).tolist()}: {explanation}")
    expect_close(got, expected.patched, what, atol=1e-4, rtol=1e-4)
    return (f"right on a random {model.config.n_layer}-layer model: the corrupted prompt gives "
            f"{expected.corrupted:+.3f}, the clean one {expected.clean:+.3f}, and at block 0 only "
            f"the changed position matters")
