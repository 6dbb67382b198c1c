"""explorer.interp, checked against things it does not compute itself: the model's own
forward (fresh runs, truncated copies), hand-computed induction scores, and constructed heads."""
import ast
from pathlib import Path

import numpy as np
import pytest

import explorer
from explorer import GPT, GPTConfig
from explorer.interp import cache_activations, induction_scores, logit_lens, repeated_tokens, residual_stream_names

CONFIG = dict(n_layer=2, n_head=2, n_embd=16, vocab_size=11, block_size=8)


@pytest.fixture
def tokens():
    return np.random.default_rng(1).integers(0, CONFIG["vocab_size"], (2, 6))


# ----------------------------------------------------------------------- activation cache
def test_cache_holds_every_recorded_activation_as_a_fresh_forward_computes_it(random_gpt, tokens):
    model = random_gpt(**CONFIG)
    targets = np.roll(tokens, -1, axis=1)
    without, with_targets = cache_activations(model, tokens), cache_activations(model, tokens, targets)

    fresh = random_gpt(**CONFIG)
    fresh.forward(tokens, targets)
    assert set(with_targets) == set(fresh.acts)
    # without targets the loss ops never ran: their buffers would be stale, so they are left out
    assert set(without) == set(fresh.acts) - {"probs", "losses"}
    for name, value in fresh.acts.items():
        np.testing.assert_array_equal(with_targets[name], value, err_msg=name)
        if name in without:
            np.testing.assert_array_equal(without[name], value, err_msg=name)


def test_cache_keeps_its_copies_when_the_model_runs_again(random_gpt, tokens):
    model = random_gpt(**CONFIG)
    cache = cache_activations(model, tokens)
    kept = {name: value.copy() for name, value in cache.items()}
    model.forward(tokens[:, ::-1].copy())
    for name, value in kept.items():
        np.testing.assert_array_equal(cache[name], value, err_msg=name)
        assert not np.shares_memory(cache[name], model.acts[name]), name


def test_cache_of_chosen_names_and_per_layer_stacks(random_gpt, tokens):
    model = random_gpt(**CONFIG)
    names = ["blocks.0.attn.att", "blocks.1.attn.att", "logits"]
    cache = cache_activations(model, tokens, names=names)
    assert list(cache) == names
    att = cache.layers("attn.att")
    assert att.shape == (2, 2, 2, 6, 6)                       # (n_layer, B, NH, T, T)
    model.forward(tokens)
    np.testing.assert_array_equal(att[1], model.acts["blocks.1.attn.att"])
    with pytest.raises(KeyError, match=r"no 'blocks.0.mlp.fc'.*\['attn.att'\]"):
        cache.layers("mlp.fc")


def test_cache_refuses_names_the_forward_did_not_compute(random_gpt, tokens):
    model = random_gpt(**CONFIG)
    with pytest.raises(KeyError, match="no activation named 'blocks.7.attn.att'.*'encoded'"):
        cache_activations(model, tokens, names=["blocks.7.attn.att"])
    with pytest.raises(KeyError, match="'losses'.*only when the forward gets targets"):
        cache_activations(model, tokens, names=["losses"])


# ----------------------------------------------------------------------- logit lens
def test_lens_of_the_last_residual_is_the_models_own_logits(random_gpt, tokens):
    model = random_gpt(**CONFIG)
    logits, _ = model.forward(tokens)
    lens = logit_lens(model, residual_stream_names(model.config)[-1])
    assert lens.shape == (2, 6, CONFIG["vocab_size"]) and lens.dtype == np.float64
    np.testing.assert_allclose(lens, logits, rtol=1e-4, atol=1e-4)


def test_lens_part_way_is_the_logits_of_the_model_cut_there(random_gpt, tokens):
    """A 1-layer GPT holding the first block (and the same embeddings and ln_f) outputs the
    lens at blocks.0.residual2; with that block's writes to the stream zeroed, the lens at
    "encoded"."""
    model = random_gpt(**CONFIG)
    model.forward(tokens)
    cut = GPT(GPTConfig(**{**CONFIG, "n_layer": 1}))
    for name, value in cut.params.items():
        value[...] = model.params[name]
    np.testing.assert_allclose(logit_lens(model, "blocks.0.residual2"), cut.forward(tokens)[0],
                               rtol=1e-4, atol=1e-4)
    for name in ("attn.proj.weight", "attn.proj.bias", "mlp.proj.weight", "mlp.proj.bias"):
        cut.params[f"blocks.0.{name}"][...] = 0.0
    np.testing.assert_allclose(logit_lens(model, "encoded"), cut.forward(tokens)[0],
                               rtol=1e-4, atol=1e-4)


def test_lens_variants_without_layernorm_or_its_affine(random_gpt, tokens):
    model = random_gpt(**CONFIG)
    model.forward(tokens)
    name = "blocks.1.residual1"
    x = model.acts[name].astype(np.float64)
    wte = model.params["wte"].astype(np.float64)
    np.testing.assert_allclose(logit_lens(model, name, layernorm=False),
                               np.einsum("btc,vc->btv", x, wte), rtol=1e-10)
    plain = random_gpt(**CONFIG)                              # the same model, ln_f reset
    plain.params["ln_f.weight"][...], plain.params["ln_f.bias"][...] = 1.0, 0.0
    plain.forward(tokens)
    np.testing.assert_allclose(logit_lens(model, name, affine=False), logit_lens(plain, name),
                               rtol=1e-10)
    assert not np.allclose(logit_lens(model, name), logit_lens(plain, name), atol=1e-2)


def test_lens_reads_a_cache_and_leaves_activations_alone(random_gpt, tokens):
    model = random_gpt(**CONFIG)
    cache = cache_activations(model, tokens)      # the lean forward: model.acts are not filled
    model.forward(tokens)
    expected = logit_lens(model, "blocks.0.residual1")
    model.forward(tokens[:, ::-1].copy())                     # model.acts now hold another input
    before = model.acts["blocks.0.residual1"].copy()
    np.testing.assert_array_equal(logit_lens(model, "blocks.0.residual1", cache), expected)
    logit_lens(model, "blocks.0.residual1")
    np.testing.assert_array_equal(model.acts["blocks.0.residual1"], before)


def test_lens_refuses_what_is_not_the_residual_stream(random_gpt, tokens):
    model = random_gpt(**CONFIG)
    model.forward(tokens)
    with pytest.raises(KeyError, match=r"'blocks.9.residual2'.*\['encoded', 'blocks.0.residual1'"):
        logit_lens(model, "blocks.9.residual2")
    with pytest.raises(ValueError, match=r"\(B, T, C=16\); 'blocks.0.mlp.fc' has shape \(2, 6, 64\)"):
        logit_lens(model, "blocks.0.mlp.fc")


# ----------------------------------------------------------------------- induction scores
def test_induction_score_of_a_hand_built_pattern():
    # token 5 at 0, 2, 5 and token 7 at 1, 3: the repeated positions and their targets
    # (the token after the most recent earlier occurrence) are t=2 -> 1, t=3 -> 2, t=5 -> 3
    tokens = np.array([[5, 7, 5, 7, 9, 5]])
    att = np.zeros((1, 2, 6, 6))
    att[0, 0, 2, :3] = [0.2, 0.5, 0.3]
    att[0, 0, 3, :4] = [0.1, 0.1, 0.6, 0.2]
    att[0, 0, 5, :6] = [0.1, 0.1, 0.1, 0.4, 0.2, 0.1]
    att[0, 1, 2, :3] = [1.0, 0.0, 0.0]
    att[0, 1, 3, :4] = [0.0, 0.8, 0.0, 0.2]
    att[0, 1, 5, :6] = [0.0, 0.3, 0.0, 0.0, 0.0, 0.7]
    np.testing.assert_allclose(induction_scores(att, tokens),
                               [(0.5 + 0.6 + 0.4) / 3, (0.0 + 0.0 + 0.0) / 3])
    # the variants the course recognises as slips, by hand as well
    np.testing.assert_allclose(induction_scores(att, tokens, target_offset=0),
                               [(0.2 + 0.1 + 0.1) / 3, (1.0 + 0.8 + 0.0) / 3])
    np.testing.assert_allclose(induction_scores(att, tokens, most_recent=False),
                               [(0.5 + 0.6 + 0.1) / 3, (0.0 + 0.0 + 0.3) / 3])
    np.testing.assert_allclose(induction_scores(att, tokens, every_position=True),
                               [(0.5 + 0.6 + 0.4) / 6, 0.0])


def causal_pattern(T, target):
    """(T, T) attention of a head that puts all its weight on target(t) (clipped into [0, t])."""
    att = np.zeros((T, T))
    for t in range(T):
        att[t, min(max(target(t), 0), t)] = 1.0
    return att


def test_on_repeated_random_tokens_an_induction_head_scores_high_and_others_low():
    B, L = 3, 7
    tokens = repeated_tokens(np.random.default_rng(0), B, L, vocab_size=50)
    T = 2 * L
    uniform = np.tril(np.ones((T, T))) / np.arange(1, T + 1)[:, None]
    heads = np.stack([causal_pattern(T, lambda t: t - L + 1 if t >= L else t),   # induction
                      causal_pattern(T, lambda t: t - 1),                        # previous token
                      uniform])
    att = np.broadcast_to(heads, (B, 3, T, T))
    scores = induction_scores(att, tokens)
    # the repeated positions are t = L .. 2L-1, and a uniform head gives each 1 / (t + 1)
    np.testing.assert_allclose(scores, [1.0, 0.0, np.mean(1.0 / np.arange(L + 1, T + 1))])
    assert scores[2] < 0.1


def test_induction_scores_refuse_mismatched_shapes_and_sequences_without_repeats():
    att = np.full((1, 2, 4, 4), 0.25)
    with pytest.raises(ValueError, match=r"\(B, NH, T, T\), got shape \(2, 4, 4\)"):
        induction_scores(att[0], np.zeros((1, 4), int))
    with pytest.raises(ValueError, match=r"\(B, T\) = \(1, 4\).*got shape \(1, 5\)"):
        induction_scores(att, np.zeros((1, 5), int))
    with pytest.raises(ValueError, match="no token repeats"):
        induction_scores(att, np.array([[0, 1, 2, 3]]))


def test_repeated_tokens_are_a_run_of_distinct_tokens_then_the_same_run():
    tokens = repeated_tokens(np.random.default_rng(2), 4, 9, vocab_size=9)
    assert tokens.shape == (4, 18) and tokens.dtype == np.int64
    np.testing.assert_array_equal(tokens[:, :9], tokens[:, 9:])
    assert all(sorted(row) == list(range(9)) for row in tokens[:, :9])   # all 9 ids, once each
    with pytest.raises(ValueError, match="length 10 .* vocab_size=9"):
        repeated_tokens(np.random.default_rng(2), 1, 10, vocab_size=9)


# ----------------------------------------------------------------------- the floor
# ----------------------------------------------------------------------- activation patching
@pytest.mark.parametrize("name, where", [
    ("encoded", (slice(None), 2)), ("blocks.0.ln1.out", (slice(None), 1)),
    ("blocks.1.attn.att", (slice(None), 0)), ("blocks.0.residual2", (slice(None), 4)),
    ("blocks.1.mlp.fc", (..., slice(0, 20))), ("blocks.1.residual2", (slice(None), 5)),
    ("ln_f.out", (slice(None), 5)), ("logits", (..., 3))])
def test_patching_from_the_patch_point_equals_a_whole_forward_with_the_hook(random_gpt, tokens, name, where):
    """patch_activations starts each run at the patch's block (or at ln_f), from the corrupted
    run's stream, with ln_f and the LM head on the last position: the same numbers as the whole
    corrupted forward with the clean value hooked in, for names in the blocks, the streams
    between them (given, not hooked) and after them."""
    from explorer.interp import logit_difference, patch_activations, replace_with, run_with_hooks
    model = random_gpt(**CONFIG)
    corrupted = tokens.copy()
    corrupted[:, 2] = (tokens[:, 2] + 3) % CONFIG["vocab_size"]
    clean_value = cache_activations(model, tokens, names=[name])[name]
    result = patch_activations(model, tokens, corrupted, 1, 4, {(0,): (name, where), (1,): (name, (...,))})
    for index, w in ((0, where), (1, (...,))):
        logits = run_with_hooks(model, corrupted, {name: replace_with(clean_value[w], w)})
        np.testing.assert_allclose(result.patched[index], logit_difference(logits, 1, 4), rtol=1e-5, atol=1e-5)
    assert abs(result.clean - result.corrupted) > 1e-3     # the metric tells the prompts apart
    if name in ("encoded", "blocks.0.residual2", "blocks.1.residual2", "ln_f.out", "logits"):   # streams
        np.testing.assert_allclose(result.patched[1], result.clean, rtol=1e-5, atol=1e-5)


def test_interp_is_a_lazy_subpackage_importing_only_the_floors_below_it():
    assert "interp" in dir(explorer) and explorer.interp.logit_lens is logit_lens
    allowed = {"model", "kernels", "interp"}
    for path in Path(explorer.interp.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level >= 2:        # from ..x import y
                assert (node.module or "").split(".")[0] in allowed, f"{path.name} imports ..{node.module}"
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                assert not node.module.startswith("explorer."), f"{path.name}: {node.module}"
