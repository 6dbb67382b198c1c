"""Exercises of notebooks/06_interpretability.ipynb: reading a trained model's internals.

    induction_scores(att, tokens)    (NH,): how strongly each head attends to the token
                                     after the previous occurrence of the current token
    logit_lens(model, name)          (B, T, V): the residual stream at activation `name`
                                     read out through the final layernorm and the LM head

Each check compares with the reference in explorer.interp (the one the views use too) and,
when the answer is wrong, tries the usual slips (the previous occurrence itself instead of the
token after it, no layernorm...) to say which one it was.
"""
import numpy as np

from .. import interp
from ..model.config import GPTConfig
from ..model.gpt import GPT
from .feedback import Mismatch, call, expect_array, expect_close
from .registry import exercise


# --------------------------------------------------------------------- induction heads
def _causal_attention(rng, B, NH, T, sharpness=2.0):
    scores = rng.normal(0.0, sharpness, (B, NH, T, T))
    scores[..., np.triu_indices(T, 1)[0], np.triu_indices(T, 1)[1]] = -np.inf
    weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return weights / weights.sum(axis=-1, keepdims=True)


def _induction_cases():
    """(att, tokens): random attention over tokens that repeat, and a handmade sequence
    (a run, then the run again) with head 0 a perfect induction head, head 1 looking at the
    previous token and head 2 at the first token."""
    rng = np.random.default_rng(6)
    cases = [(_causal_attention(rng, 2, 3, 12), rng.integers(0, 5, (2, 12)))]
    run = [4, 9, 2, 7, 5]
    tokens = np.array([[1, 3, 0] + run + run])
    T = tokens.shape[1]
    att = np.zeros((1, 3, T, T))
    for t in range(T):
        earlier = [s for s in range(t) if tokens[0, s] == tokens[0, t]]
        att[0, 0, t, earlier[-1] + 1 if earlier else t] = 1.0
        att[0, 1, t, max(t - 1, 0)] = 1.0
        att[0, 2, t, 0] = 1.0
    cases.append((att, tokens))
    return cases


_INDUCTION_SLIPS = [
    (dict(target_offset=0), "you averaged the attention to the earlier occurrence itself; an "
                            "induction head looks at the token just after it (s + 1)"),
    (dict(most_recent=False), "you used the first earlier occurrence of the token; use the "
                              "most recent one"),
    (dict(every_position=True), "you divided by every position; average only over the "
                                "positions whose token occurred earlier in the row"),
]


@exercise("interp.induction_scores", "Induction score of each head",
          "induction_scores(att, tokens)",
          hint="For each row b and position t, remember where each token was last seen. If "
               "tokens[b, t] was seen before at s, add att[b, :, t, s + 1] to a running total "
               "and count the position; return total / count.")
def _check_induction_scores(induction_scores):
    for att, tokens in _induction_cases():
        what = f"induction_scores(att of shape {att.shape}, tokens of shape {tokens.shape})"
        got = call(induction_scores, att.copy(), tokens.copy(), what=what)
        got = expect_array(got, what, att.shape[1:2])   # (NH,)
        _expect_no_slip(got, att, tokens, what)
        expect_close(got, interp.induction_scores(att, tokens), what, name="heads")
    return ("right on random attention over repeating tokens and on a handmade example "
            "(a perfect induction head scores 1)")


def _expect_no_slip(got, att, tokens, what):
    expected = interp.induction_scores(att, tokens)
    if np.allclose(got, expected, atol=1e-6):
        return
    for options, explanation in _INDUCTION_SLIPS:
        if np.allclose(got, interp.induction_scores(att, tokens, **options), atol=1e-6):
            raise Mismatch(f"{what} returned {np.round(got, 4).tolist()}; expected "
                           f"{np.round(expected, 4).tolist()}: {explanation}")


# --------------------------------------------------------------------- logit lens
LENS_NAMES = ["encoded", "blocks.0.residual1", "blocks.1.residual2"]


def _lens_model():
    """A small model after a forward pass, with a final layernorm far from 1 and 0 (so
    leaving it out shows)."""
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=16, vocab_size=11, block_size=8), seed=3)
    rng = np.random.default_rng(3)
    for p in model.params.values():
        p[...] = rng.normal(0.0, 0.3, p.shape)
    model.params["ln_f.weight"][...] = 1.0 + rng.normal(0.0, 0.5, 16)
    model.forward(rng.integers(0, 11, (2, 6)))
    return model


@exercise("interp.logit_lens", "The logit lens", "logit_lens(model, name)",
          hint="Take x = model.acts[name], apply the final layernorm with model.params"
               "['ln_f.weight'] and ['ln_f.bias'] (mean and variance over the last axis, "
               "eps = 1e-5), then multiply by the token embedding transposed: "
               "x @ model.params['wte'].T.")
def _check_logit_lens(logit_lens):
    model = _lens_model()
    saved = {name: model.acts[name].copy() for name in LENS_NAMES}
    B, T, _ = model.acts["encoded"].shape
    shape = (B, T, model.config.vocab_size)
    for name in LENS_NAMES:
        what = f"logit_lens(model, {name!r})"
        got = expect_array(call(logit_lens, model, name, what=what), what, shape)
        if not np.array_equal(model.acts[name], saved[name]):
            raise Mismatch(f"{what} changed model.acts[{name!r}]: work on a copy (the "
                           f"model's activations are what the other cells read)")
        _expect_no_lens_slip(got, model, name, what)
        expect_close(got, interp.logit_lens(model, name), what, atol=1e-3, rtol=1e-3)
    return (f"right at {', '.join(LENS_NAMES)}; at the last one the lens is the model's own "
            f"logits")


def _expect_no_lens_slip(got, model, name, what):
    def near(expected):
        return np.allclose(got, expected, atol=1e-3, rtol=1e-3)
    if near(interp.logit_lens(model, name)):
        return
    if name != "blocks.1.residual2" and near(model.acts["logits"]):
        raise Mismatch(f"{what} returned the model's final logits; the lens reads the "
                       f"residual stream at {name!r} (model.acts[name])")
    if near(interp.logit_lens(model, name, layernorm=False)):
        raise Mismatch(f"{what} is model.acts[name] @ wte.T without the final layernorm: the "
                       f"LM head only ever sees layernormed vectors, so normalise first")
    if near(interp.logit_lens(model, name, affine=False)):
        raise Mismatch(f"{what} normalises but leaves out ln_f.weight and ln_f.bias: after "
                       f"normalising, multiply by the weight and add the bias")
