"""Hidden tests: an exercise's function again, on cases drawn from a seed the student never sees.

The checks in class run fixed cases and say what each should give ("count_pairs([5, 5, 5]):
(5, 5) occurs 2 times"): enough to write a function that knows only those answers. For
grading, nbgrader's hidden tests (explorer.course.nbgrader_export) also run

    run_hidden("tokens.count_pairs", count_pairs, seed)    # (passed, message)

which draws new inputs from `seed` and compares with the same references the checks use.
The kernel exercises have none: their cases are random arrays, whose outputs cannot be
written down, and check_kernel already compares every entry with the float64 reference.
"""
import numpy as np

from .. import interp
from ..model.config import GPTConfig
from ..model.gpt import GPT
from ..tokenizers.bpe import _merge_word
from .feedback import Mismatch, call, expect_array, expect_close, expect_counts, expect_ints, short

_HIDDEN = {}     # exercise id -> check(candidate, rng), raising Mismatch


def hidden(exercise_id):
    """Decorator: register the hidden check of an exercise."""
    def register(check):
        _HIDDEN[exercise_id] = check
        return check
    return register


def has_hidden(exercise_id):
    return exercise_id in _HIDDEN


def run_hidden(exercise_id, candidate, seed):
    """(passed, message) of the exercise's hidden check on the cases drawn from seed."""
    if exercise_id not in _HIDDEN:
        raise KeyError(f"exercise {exercise_id!r} has no hidden tests; these have: "
                       f"{', '.join(_HIDDEN)}")
    try:
        return True, _HIDDEN[exercise_id](candidate, np.random.default_rng(seed))
    except Mismatch as problem:
        return False, f"on a case not shown in class: {problem}"


# --------------------------------------------------------------------- tokens
@hidden("tokens.count_pairs")
def _count_pairs(count_pairs, rng):
    from .tokens import pair_counts
    for _ in range(20):
        ids = rng.integers(0, 5, rng.integers(0, 30)).tolist()
        what = f"count_pairs({short(ids)})"
        expect_counts(call(count_pairs, list(ids), what=what), pair_counts(ids), what)
    return "right on 20 random lists"


@hidden("tokens.merge")
def _merge(merge, rng):
    for _ in range(20):
        ids = rng.integers(0, 4, rng.integers(0, 30)).tolist()
        pair, new_id = tuple(int(t) for t in rng.integers(0, 4, 2)), int(rng.integers(256, 1000))
        what = f"merge({short(ids)}, {pair}, {new_id})"
        expect_ints(call(merge, list(ids), pair, new_id, what=what),
                    _merge_word(ids, *pair, new_id), what)
    return "right on 20 random lists"


@hidden("tokens.learn_merges")
def _learn_merges(learn_merges, rng):
    from .tokens import _expect_pairs, _replay, byte_chunks
    for _ in range(3):
        words = ["".join(rng.choice(list("abcd"), rng.integers(1, 6))) for _ in range(8)]
        text = " ".join(str(rng.choice(words)) for _ in range(40))
        num_merges = int(rng.integers(3, 10))
        what = f"learn_merges(byte_chunks({short(text, 30)}), {num_merges})"
        merges = _expect_pairs(call(learn_merges, byte_chunks(text), num_merges, what=what), what)
        _replay(merges, byte_chunks(text), num_merges, what)   # a most frequent pair each time
    return "every merge a most frequent pair on 3 random texts"


# --------------------------------------------------------------------- sampling
@hidden("sampling.next_token_probs")
def _next_token_probs(next_token_probs, rng):
    from .sampling import reference_probs
    for _ in range(10):
        logits = rng.normal(0.0, 3.0, int(rng.integers(2, 30)))
        temperature = float(rng.choice([0.3, 0.8, 1.0, 1.7]))
        top_k = None if rng.random() < 0.4 else int(rng.integers(1, len(logits) + 1))
        what = f"next_token_probs({short(logits)}, temperature={temperature}, top_k={top_k})"
        got = call(next_token_probs, logits.copy(), temperature, top_k, what=what)
        expect_close(got, reference_probs(logits, temperature, top_k), what, atol=1e-6,
                     rtol=1e-4, name="tokens")
    return "right on 10 random logit vectors"


@hidden("sampling.sample")
def _sample(sample, rng):
    from .sampling import DRAWS, _expect_frequencies, _expect_token
    logits, temperature, top_k = rng.normal(0.0, 1.5, 8), 1.3, 5
    what = f"sample({short(logits)}, temperature={temperature}, top_k={top_k}, rng)"
    draws = np.random.default_rng(int(rng.integers(1 << 31)))
    tokens = np.array([_expect_token(call(sample, logits.copy(), temperature, top_k, draws, what=what),
                                     len(logits), what) for _ in range(DRAWS)])
    _expect_frequencies(tokens, logits, temperature, top_k, what)
    return f"{DRAWS:,} draws from random logits match their probabilities"


# --------------------------------------------------------------------- interpretability
@hidden("interp.induction_scores")
def _induction_scores(induction_scores, rng):
    from .interpretability import _causal_attention
    for _ in range(3):
        B, NH, T = int(rng.integers(1, 4)), int(rng.integers(1, 4)), int(rng.integers(4, 16))
        att, tokens = _causal_attention(rng, B, NH, T), rng.integers(0, 4, (B, T))
        what = f"induction_scores(att of shape {att.shape}, tokens of shape {tokens.shape})"
        got = expect_array(call(induction_scores, att.copy(), tokens.copy(), what=what), what, (NH,))
        expect_close(got, interp.induction_scores(att, tokens), what, name="heads")
    return "right on 3 random batches"


@hidden("interp.logit_lens")
def _logit_lens(logit_lens, rng):
    config = GPTConfig(n_layer=2, n_head=2, n_embd=8, vocab_size=int(rng.integers(5, 20)), block_size=8)
    model = GPT(config, seed=int(rng.integers(1000)))
    for p in model.params.values():
        p[...] = rng.normal(0.0, 0.3, p.shape)
    model.params["ln_f.weight"][...] = 1.0 + rng.normal(0.0, 0.5, config.n_embd)
    model.forward(rng.integers(0, config.vocab_size, (2, 5)))
    for name in ["encoded", "blocks.0.residual2", "blocks.1.residual1"]:
        what = f"logit_lens(model, {name!r})"
        got = expect_array(call(logit_lens, model, name, what=what), what, (2, 5, config.vocab_size))
        expect_close(got, interp.logit_lens(model, name), what, atol=1e-3, rtol=1e-3)
    return "right on a random model"


# --------------------------------------------------------------------- open weights
@hidden("open_weights.patch_residual")
def _patch_residual(patch_residual, rng):
    config = GPTConfig(n_layer=int(rng.integers(1, 4)), n_head=2, n_embd=8,
                       vocab_size=int(rng.integers(6, 16)), block_size=8)
    model = GPT(config, seed=int(rng.integers(1000)))
    for p in model.params.values():
        p[...] += rng.normal(0.0, 0.3, p.shape)
    T = int(rng.integers(3, 8))
    clean = rng.integers(0, config.vocab_size, (1, T))
    corrupted = clean.copy()
    t = int(rng.integers(0, T))
    corrupted[0, t] = (clean[0, t] + 1 + int(rng.integers(config.vocab_size - 1))) % config.vocab_size
    answer, other = (int(i) for i in rng.choice(config.vocab_size, 2, replace=False))
    what = f"patch_residual(model, clean, corrupted, {answer}, {other}) with prompts of shape {clean.shape}"
    got = expect_array(call(patch_residual, model, clean.copy(), corrupted.copy(), answer, other,
                            what=what), what, (config.n_layer, T))
    expect_close(got, interp.patch_residual(model, clean, corrupted, answer, other).patched, what,
                 atol=1e-4, rtol=1e-4)
    return f"right on a random {config.n_layer}-layer model"
