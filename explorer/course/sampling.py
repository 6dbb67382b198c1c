"""Exercises of notebooks/07_sampling.ipynb: from next-token logits to a token.

    next_token_probs(logits, temperature, top_k)   (V,) softmax(logits / temperature) over
                                                   the top_k largest logits, 0 elsewhere;
                                                   temperature 0 = all mass on the argmax
    sample(logits, temperature, top_k, rng)        one token id drawn from those probabilities

The reference is the package's own (explorer.viz.tokens.next_token_distribution, what the
SamplingView draws). Sampling is checked statistically with fixed seeds: every run of the
check sees the same draws, and a right answer fails with a probability below one in a
million.
"""
import numpy as np

from .feedback import Mismatch, call, expect_array, expect_close, short
from .registry import exercise

LOGITS = np.array([2.0, 1.0, 0.5, -1.0, 3.0, 0.0])
LARGE = np.array([1000.0, 998.0, -1000.0, 999.5])   # exp() of these overflows float64
PROB_CASES = [(1.0, None), (0.5, None), (2.0, None), (1.0, 3), (0.7, 1), (1.0, 10), (0.0, None)]
DRAWS = 4000
SIGMAS = 5.0


def reference_probs(logits, temperature, top_k):
    from ..viz.tokens import next_token_distribution  # imported late: it loads the widgets
    return next_token_distribution(logits, temperature, top_k)


def _expect_value_error(fn, args, what):
    """fn(*args) must raise a ValueError whose message mentions the temperature."""
    try:
        with np.errstate(all="ignore"):
            returned = fn(*args)
    except ValueError as error:
        if "temperature" not in str(error).lower():
            raise Mismatch(f"{what} raised ValueError({str(error)!r}); right type, but the "
                           f"message should say what was wrong, e.g. 'temperature must be "
                           f">= 0, got -1.0'") from None
        return
    except Exception as error:  # noqa: BLE001
        raise Mismatch(f"{what} raised {type(error).__name__}: {error}; a negative temperature "
                       f"should raise ValueError saying so") from None
    raise Mismatch(f"{what} returned {short(returned)}; a negative temperature means nothing, "
                   f"so raise ValueError (e.g. 'temperature must be >= 0, got -1.0')")


def _unchanged(given, original, what):
    if not np.array_equal(given, original):
        raise Mismatch(f"{what} changed the logits array it was given (to {short(given)}): "
                       f"compute on a copy, e.g. `logits / temperature` instead of "
                       f"`logits /= temperature`")


# --------------------------------------------------------------------- probabilities
@exercise("sampling.next_token_probs", "Temperature and top-k",
          "next_token_probs(logits, temperature, top_k)",
          hint="If temperature == 0 return a one-hot vector at np.argmax(logits). Else scale "
               "= logits / temperature; with top_k, set every scaled logit below the k-th "
               "largest to -inf; then softmax, subtracting scale.max() before np.exp.")
def _check_next_token_probs(next_token_probs):
    cases = [(LOGITS, t, k) for t, k in PROB_CASES] + [(LARGE, 1.0, None), (LARGE, 1e-6, 2)]
    for logits, temperature, top_k in cases:
        what = f"next_token_probs({short(logits)}, temperature={temperature}, top_k={top_k})"
        given = logits.copy()
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            got = call(next_token_probs, given, temperature, top_k, what=what)
        _unchanged(given, logits, what)
        got = expect_array(got, what, logits.shape)
        expected = reference_probs(logits, temperature, top_k)
        _explain_probs(got, expected, logits, temperature, top_k, what)
        expect_close(got, expected, what, atol=1e-6, rtol=1e-4, name="tokens")
    _expect_value_error(next_token_probs, (LOGITS.copy(), -1.0, None),
                        f"next_token_probs({short(LOGITS)}, temperature=-1.0, top_k=None)")
    return (f"right for {len(cases)} settings, including greedy (temperature 0), top_k=1, "
            f"top_k larger than the vocabulary, logits of 1000 and a temperature of 1e-6; a "
            f"negative temperature raises ValueError")


def _explain_probs(got, expected, logits, temperature, top_k, what):
    """A Mismatch naming the slip, when `got` matches a known one."""
    if np.allclose(got, expected, atol=1e-6, rtol=1e-4):
        return
    total = got.sum()
    if abs(total - 1.0) > 1e-4:
        raise Mismatch(f"{what} returned probabilities that sum to {total:.6g}, not 1"
                       + (": renormalise after dropping the tokens outside the top k"
                          if top_k and total < 1 else ""))
    outside = np.flatnonzero((expected == 0) & (got > 1e-9))
    if top_k and len(outside):
        top = np.argsort(-logits, kind="stable")[:top_k]
        raise Mismatch(f"{what} gives token {outside[0]} (logit {logits[outside[0]]:g}) "
                       f"probability {got[outside[0]]:.4g}; only the top {top_k} logits "
                       f"(tokens {sorted(top.tolist())}) may be drawn")
    if temperature not in (0.0, 1.0) and np.allclose(got, reference_probs(logits, 1.0, top_k),
                                                     atol=1e-6):
        raise Mismatch(f"{what} ignores the temperature: divide the logits by it before the "
                       f"softmax")
    if temperature > 0 and np.allclose(got, reference_probs(logits * temperature ** 2, temperature,
                                                            top_k), atol=1e-6):
        raise Mismatch(f"{what} multiplies the logits by the temperature; divide them by it "
                       f"(a high temperature flattens the distribution)")


# --------------------------------------------------------------------- sampling
STAT_CASES = [(1.0, None, 11), (0.5, None, 12), (2.0, 4, 13)]


@exercise("sampling.sample", "Sample a token", "sample(logits, temperature, top_k, rng)",
          hint="Get the probabilities (your next_token_probs), then draw one index with the "
               "generator you are given: int(rng.choice(len(probs), p=probs)). Never use "
               "np.random directly: the seed must decide the draw.")
def _check_sample(sample):
    def draw(logits, temperature, top_k, rng, n):
        what = f"sample({short(logits)}, temperature={temperature}, top_k={top_k}, rng)"
        given = logits.copy()
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            tokens = [_expect_token(call(sample, given, temperature, top_k, rng, what=what),
                                    len(logits), what) for _ in range(n)]
        _unchanged(given, logits, what)
        return np.array(tokens), what

    for logits, temperature, top_k, why in [
            (LOGITS, 0.0, None, "temperature 0 is greedy"),
            (LOGITS, 1.0, 1, "top_k=1 keeps only the largest logit"),
            (LOGITS, 1e-6, None, "a tiny temperature is all but greedy"),
            (LARGE, 1e-6, None, "a tiny temperature is all but greedy")]:
        tokens, what = draw(logits, temperature, top_k, np.random.default_rng(0), 50)
        argmax = int(np.argmax(logits))
        if (tokens != argmax).any():
            raise Mismatch(f"{what} drew token {tokens[tokens != argmax][0]}; {why}, so it "
                           f"must always be token {argmax} (the largest logit)")
    once, _ = draw(LOGITS, 1.0, None, np.random.default_rng(5), 50)
    again, what = draw(LOGITS, 1.0, None, np.random.default_rng(5), 50)
    if not np.array_equal(once, again):
        raise Mismatch(f"{what}: two generators with the same seed gave different tokens: "
                       f"draw with the rng you are given, not np.random")
    for temperature, top_k, seed in STAT_CASES:
        tokens, what = draw(LOGITS, temperature, top_k, np.random.default_rng(seed), DRAWS)
        _expect_frequencies(tokens, LOGITS, temperature, top_k, what)
    _expect_value_error(lambda *a: sample(*a, np.random.default_rng(0)), (LOGITS.copy(), -1.0, None),
                        f"sample({short(LOGITS)}, temperature=-1.0, top_k=None, rng)")
    return (f"greedy at temperature 0, with top_k=1 and at temperature 1e-6 (logits of 1000 "
            f"too); reproducible for a seed; {DRAWS:,} draws at each of {len(STAT_CASES)} "
            f"settings match the probabilities within {SIGMAS:g} standard errors")


def _expect_token(token, vocab_size, what):
    if isinstance(token, np.ndarray) and token.ndim == 0:
        token = token[()]
    if isinstance(token, (bool, np.bool_)) or not isinstance(token, (int, np.integer)):
        raise Mismatch(f"{what} returned {short(token)} ({type(token).__name__}); return one "
                       f"token id, an int such as int(rng.choice(len(probs), p=probs))")
    if not 0 <= token < vocab_size:
        raise Mismatch(f"{what} returned {token}, outside the vocabulary 0..{vocab_size - 1}")
    return int(token)


def _expect_frequencies(tokens, logits, temperature, top_k, what):
    """Each token's share of the draws within SIGMAS standard errors of its probability."""
    expected = reference_probs(logits, temperature, top_k)
    freq = np.bincount(tokens, minlength=len(logits)) / len(tokens)
    outside = np.flatnonzero((expected == 0) & (freq > 0))
    if len(outside):
        raise Mismatch(f"{what} drew token {outside[0]} (logit {logits[outside[0]]:g}), which "
                       f"is not among the top {top_k} logits")
    error = np.sqrt(expected * (1 - expected) / len(tokens))
    off = np.abs(freq - expected) > SIGMAS * error + 1e-3
    if off.any():
        t = int(np.argmax(np.abs(freq - expected) / (error + 1e-9)))
        guess = ""
        if freq[np.argmax(logits)] == 1.0:
            guess = (" Every draw was the most likely token: that is greedy decoding; draw at "
                     "random, with these probabilities, using rng.")
        elif np.abs(freq - reference_probs(logits, 1.0, top_k)).max() < 0.02:
            guess = " The draws follow temperature 1: divide the logits by the temperature."
        elif np.abs(freq - reference_probs(logits, temperature, None)).max() < 0.02:
            guess = " The draws ignore top_k."
        raise Mismatch(f"{what}: token {t} came up in {freq[t]:.1%} of {len(tokens):,} draws; "
                       f"its probability is {expected[t]:.1%} (expected within "
                       f"±{SIGMAS * error[t]:.1%}).{guess}")
