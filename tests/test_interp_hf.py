"""explorer.interp's analyses (activation cache, logit lens, hooks, direct logit attribution,
activation patching, induction scores of every head) against the same quantities computed from
transformers' GPT2LMHeadModel with the same weights, through its own outputs (output_attentions,
output_hidden_states) and forward hooks on transformer.h[l].attn / attn.c_proj / mlp / ln_f.
Tolerance 1e-4.

Each comparison also computes a plausible wrong version on the transformers side (a head
layout, a layernorm convention, a target position) and checks that it is far outside the
tolerance, so that the test could fail."""
import numpy as np
import pytest
from helpers import randomize_params

from explorer import GPT, GPTConfig
from explorer.interp import (
    cache_activations,
    head_induction_scores,
    hook_points,
    hooks,
    logit_attribution,
    logit_direction,
    logit_lens,
    patch_heads,
    patch_residual,
    patching,
    repeated_tokens,
    replace_with,
    resid_pre_name,
    run_with_hooks,
)
from explorer.io.hf import hf_config, to_hf_state_dict

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

CONFIG = GPTConfig(n_layer=3, n_head=4, n_embd=32, vocab_size=53, block_size=24)
TOL = dict(rtol=1e-4, atol=1e-4)
FAR = 1e-2           # a wrong version must be off by at least this (100x the tolerance)
L, NH, C = CONFIG.n_layer, CONFIG.n_head, CONFIG.n_embd
HS = C // NH


@pytest.fixture(scope="module")
def models():
    """(explorer GPT, transformers GPT2LMHeadModel) holding the same random weights, strong
    enough that attention is peaked and every component matters."""
    model = randomize_params(GPT(CONFIG), seed=4)
    config = transformers.GPT2Config(**hf_config(CONFIG))
    config._attn_implementation = "eager"          # output_attentions needs the eager path
    hf = transformers.GPT2LMHeadModel(config)
    state = {k: torch.from_numpy(v) for k, v in to_hf_state_dict(model.params, include_lm_head=True).items()}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert not unexpected and all(k.endswith(("attn.bias", "attn.masked_bias")) for k in missing), missing
    return model, hf.eval().double()


def tensor(ids):
    return torch.from_numpy(np.asarray(ids, dtype=np.int64))


def close(ours, theirs, wrong=None):
    """ours == theirs within TOL; wrong (the transformers side computed a wrong way) is not."""
    np.testing.assert_allclose(ours, theirs, **TOL)
    if wrong is not None:
        assert np.max(np.abs(np.asarray(ours) - np.asarray(wrong))) > FAR, "the test cannot tell"


class Recorder:
    """Forward hooks on a transformers model that keep inputs / outputs by label."""

    def __init__(self):
        self.seen, self.handles = {}, []

    def output(self, module, label):
        self.handles.append(module.register_forward_hook(
            lambda m, args, out: self.seen.__setitem__(label, (out[0] if isinstance(out, tuple) else out).detach())))

    def input(self, module, label):
        self.handles.append(module.register_forward_pre_hook(
            lambda m, args: self.seen.__setitem__(label, args[0].detach())))

    def close(self):
        for handle in self.handles:
            handle.remove()


# ----------------------------------------------------------------------- hook points
def test_a_hook_that_writes_nothing_changes_nothing_and_hooks_are_removed_after(models):
    model, _ = models
    idx = np.random.default_rng(0).integers(0, CONFIG.vocab_size, (2, 9))
    plain = model.forward(idx)[0].copy()
    seen = []
    same = run_with_hooks(model, idx, {name: seen.append for name in hook_points(model)})
    np.testing.assert_array_equal(same, plain)
    assert len(seen) == len(hook_points(model)) and model.hooks == {}
    with pytest.raises(RuntimeError), hooks(model, {"encoded": seen.append}):
        raise RuntimeError("a failure inside the block")
    assert model.hooks == {}
    with pytest.raises(KeyError, match="no hook point named 'blocks.9.attn.out'.*'encoded'"):
        run_with_hooks(model, idx, {"blocks.9.attn.out": seen.append})


def test_ablating_a_head_is_what_transformers_computes_without_it(models):
    """Zeroing head 2 of layer 1 (its slice of z, before attn.proj) through a hook is the same
    as zeroing that slice of c_proj's input in transformers; a strided slice is not."""
    model, hf = models
    idx = np.random.default_rng(1).integers(0, CONFIG.vocab_size, (2, 10))
    ours = run_with_hooks(model, idx, {"blocks.1.attn.out": replace_with(0.0, (..., slice(2 * HS, 3 * HS)))})

    def ablated(columns):
        def pre(module, args):
            z = args[0].clone()
            z[..., columns] = 0.0
            return (z,)
        handle = hf.transformer.h[1].attn.c_proj.register_forward_pre_hook(pre)
        with torch.no_grad():
            logits = hf(tensor(idx)).logits.numpy()
        handle.remove()
        return logits
    close(ours, ablated(slice(2 * HS, 3 * HS)), wrong=ablated(slice(2, C, NH)))


# ----------------------------------------------------------------------- cache and logit lens
def test_cache_and_logit_lens_match_transformers_hidden_states(models):
    """hidden_states[l] is the stream entering block l (the last one comes out of ln_f); the
    lens there is ln_f then the LM head, as transformers would read it."""
    model, hf = models
    idx = np.random.default_rng(6).integers(0, CONFIG.vocab_size, (2, 7))
    cache = cache_activations(model, idx)
    with torch.no_grad():
        hidden = hf(tensor(idx), output_hidden_states=True).hidden_states
        lens = [hf.lm_head(hf.transformer.ln_f(h)).numpy() for h in hidden[:L]]
    for l in range(L):
        close(cache[resid_pre_name(l, model)], hidden[l].numpy())
        close(logit_lens(model, resid_pre_name(l, model), cache), lens[l],
              wrong=logit_lens(model, resid_pre_name(l, model), cache, layernorm=False))


# ----------------------------------------------------------------------- induction scores
def test_induction_score_of_every_head_matches_transformers_attentions(models):
    model, hf = models
    n = 10
    tokens = repeated_tokens(np.random.default_rng(2), batch=3, length=n, vocab_size=CONFIG.vocab_size)
    ours = head_induction_scores(model, tokens)
    assert ours.shape == (L, NH)
    with torch.no_grad():
        attentions = hf(tensor(tokens), output_attentions=True).attentions     # L x (B, NH, T, T)

    def score(offset):   # the attention from t (second run) to t - n + offset: offset 1 = induction
        return np.stack([torch.diagonal(a, offset=-(n - offset), dim1=2, dim2=3)[..., offset:]
                         [..., :n].mean(dim=(0, 2)).numpy() for a in attentions])
    close(ours, score(1), wrong=score(0))


# ----------------------------------------------------------------------- direct logit attribution
def hf_attribution(hf, idx, answer, other, frozen=True):
    """Each component's contribution at the last position, from transformers' own activations
    (hooks), and its logit difference. frozen=False normalises each component by its own
    spread instead of the final residual's (the wrong convention)."""
    rec = Recorder()
    rec.output(hf.transformer.wte, "embed")
    rec.output(hf.transformer.wpe, "pos_embed")
    for l, block in enumerate(hf.transformer.h):
        rec.input(block.attn.c_proj, f"z{l}")
        rec.output(block.attn, f"blocks.{l}.attn")
        rec.output(block.mlp, f"blocks.{l}.mlp")
    rec.input(hf.transformer.ln_f, "final")
    with torch.no_grad():
        logits = hf(tensor(idx)).logits[:, -1]
    rec.close()
    s = {k: v[:, -1] if v.ndim == 3 else v[-1] for k, v in rec.seen.items()}
    ln = hf.transformer.ln_f
    direction = hf.lm_head.weight[answer] - hf.lm_head.weight[other]

    def through(x, final=s["final"]):
        final = final if frozen else x
        rstd = 1.0 / torch.sqrt(final.var(dim=-1, unbiased=False, keepdim=True) + ln.eps)
        while rstd.ndim < x.ndim:
            rstd = rstd.unsqueeze(1)
        return (((x - x.mean(dim=-1, keepdim=True)) * rstd * ln.weight) @ direction).detach().numpy()

    labels = ["embed", "pos_embed"] + [f"blocks.{l}.{k}" for l in range(L) for k in ("attn", "mlp")]
    components = np.stack([through(s[k].expand_as(s["final"])) for k in labels], axis=1)
    heads = np.stack([through(torch.stack([s[f"z{l}"][:, h * HS:(h + 1) * HS] @ hf.transformer.h[l].attn.c_proj
                                            .weight[h * HS:(h + 1) * HS] for h in range(NH)], dim=1))
                      for l in range(L)], axis=1)
    diff = (logits[:, answer] - logits[:, other]).numpy()
    return labels, components, heads, diff, float((ln.bias @ direction).detach())


def test_direct_logit_attribution_matches_transformers_hooks(models):
    model, hf = models
    idx = np.random.default_rng(3).integers(0, CONFIG.vocab_size, (2, 12))
    answer, other = 7, 30
    dla = logit_attribution(model, idx, logit_direction(model, answer, other))
    labels, components, heads, diff, bias = hf_attribution(hf, idx, answer, other)
    assert dla.labels == labels
    close(dla.components, components, wrong=hf_attribution(hf, idx, answer, other, frozen=False)[1])
    close(dla.heads, heads, wrong=heads[:, :, ::-1])
    np.testing.assert_allclose(dla.ln_f_bias, bias, **TOL)
    # the parts add up: the heads and b_proj are their layer's attention; all of it (and ln_f's
    # bias) is the model's logit difference, as transformers computes it
    np.testing.assert_allclose(dla.heads.sum(axis=2) + dla.attn_bias, dla.layer("attn"), **TOL)
    np.testing.assert_allclose(dla.components.sum(axis=1) + dla.ln_f_bias, diff, **TOL)
    np.testing.assert_allclose(dla.logit, diff, **TOL)


def test_attribution_of_one_logit_at_another_position(models):
    model, hf = models
    idx = np.random.default_rng(4).integers(0, CONFIG.vocab_size, (1, 8))
    dla = logit_attribution(model, idx, logit_direction(model, 5), position=4)
    with torch.no_grad():
        logit = hf(tensor(idx)).logits[0, 4, 5].item()
    np.testing.assert_allclose(dla.components.sum() + dla.ln_f_bias[0], logit, **TOL)
    with pytest.raises(ValueError, match=r"answer must be a token id in \[0, 52\], got 53"):
        logit_direction(model, 53)
    with pytest.raises(ValueError, match=r"direction must have shape \(C,\) = \(32,\)"):
        logit_attribution(model, idx, np.zeros(3))


# ----------------------------------------------------------------------- activation patching
def prompts():
    rng = np.random.default_rng(5)
    clean = rng.integers(0, CONFIG.vocab_size, (2, 9))
    corrupted = clean.copy()
    corrupted[:, 2] = (clean[:, 2] + 11) % CONFIG.vocab_size      # one token differs per row
    return clean, corrupted, 3, 17


def hf_metric(hf, idx, answer, other, patch=None):
    """transformers' logit difference at the last position (batch mean), with `patch`:
    (module, fn(input) -> input) applied as a forward pre-hook."""
    handle = None
    if patch is not None:
        module, fn = patch
        handle = module.register_forward_pre_hook(lambda m, args, kwargs: _replace_first(fn, args, kwargs),
                                                   with_kwargs=True)
    with torch.no_grad():
        out = hf(tensor(idx), output_hidden_states=True)
    if handle is not None:
        handle.remove()
    last = out.logits[:, -1]
    return float((last[:, answer] - last[:, other]).mean()), out.hidden_states


def _replace_first(fn, args, kwargs):
    if args:
        return (fn(args[0]), *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": fn(kwargs["hidden_states"])}


def test_residual_patching_matches_transformers_block_inputs(models):
    model, hf = models
    clean, corrupted, answer, other = prompts()
    result = patch_residual(model, clean, corrupted, answer, other)
    clean_metric, clean_hidden = hf_metric(hf, clean, answer, other)
    corrupted_metric, _ = hf_metric(hf, corrupted, answer, other)
    T = clean.shape[1]

    def patched(l, t):
        def fn(x):
            x = x.clone()
            x[:, t] = clean_hidden[l][:, t]
            return x
        return hf_metric(hf, corrupted, answer, other, (hf.transformer.h[l], fn))[0]
    theirs = np.array([[patched(l, t) for t in range(T)] for l in range(L)])
    assert result.patched.shape == (L, T)
    close([result.clean, result.corrupted], [clean_metric, corrupted_metric])
    close(result.patched, theirs, wrong=theirs[:, ::-1])
    # at block 0 only the changed position matters; before it nothing was different yet
    np.testing.assert_allclose(result.normalised[0, [0, 1, 3]], 0.0, atol=1e-4)
    np.testing.assert_allclose(result.normalised[0, 2], 1.0, atol=1e-4)


def test_head_patching_matches_transformers_c_proj_inputs(models):
    model, hf = models
    clean, corrupted, answer, other = prompts()
    result = patch_heads(model, clean, corrupted, answer, other)
    rec = Recorder()
    for l in range(L):
        rec.input(hf.transformer.h[l].attn.c_proj, l)
    hf_metric(hf, clean, answer, other)
    rec.close()

    def patched(l, columns):
        def fn(z):
            z = z.clone()
            z[..., columns] = rec.seen[l][..., columns]
            return z
        return hf_metric(hf, corrupted, answer, other, (hf.transformer.h[l].attn.c_proj, fn))[0]
    theirs = np.array([[patched(l, slice(h * HS, (h + 1) * HS)) for h in range(NH)] for l in range(L)])
    strided = np.array([[patched(l, slice(h, C, NH)) for h in range(NH)] for l in range(L)])
    assert result.patched.shape == (L, NH)
    close(result.patched, theirs, wrong=strided)


def test_patching_refuses_prompts_of_different_lengths(models):
    model, _ = models
    with pytest.raises(ValueError, match=r"same shape.*\(1, 4\) and \(1, 5\)"):
        patch_residual(model, [1, 2, 3, 4], [1, 2, 3, 4, 5], 1, 2)


@pytest.mark.parametrize("per_forward", [1, 3])
def test_patches_in_smaller_batches_give_the_same_numbers(models, monkeypatch, per_forward):
    """Patches go through the model in batches of at most MAX_LOGITS_PER_FORWARD logits: one
    patch per forward, or 3 (the 4 heads of a layer then take a batch of 3 and one of 1)."""
    model, _ = models
    clean, corrupted, answer, other = prompts()
    batched = patch_heads(model, clean, corrupted, answer, other).patched
    monkeypatch.setattr(patching, "MAX_LOGITS_PER_FORWARD", per_forward * clean.size * CONFIG.vocab_size)
    np.testing.assert_allclose(patch_heads(model, clean, corrupted, answer, other).patched, batched, **TOL)
