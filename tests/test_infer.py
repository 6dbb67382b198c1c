"""The lean inference forward (GPT.infer) against the training forward, the decode attention
kernel against full attention, and greedy generation against transformers' generate."""
import numpy as np
import pytest
from helpers import random_model, randomize_params

from explorer import GPT, GPTConfig, kernels
from explorer.io.hf import save_hf
from explorer.model.architecture import activation_shapes, block_input

CONFIG = GPTConfig(n_layer=3, n_head=4, n_embd=32, vocab_size=53, block_size=32)


@pytest.fixture(scope="module")
def model():
    return random_model(CONFIG, seed=4, strong=True)


@pytest.fixture
def idx():
    return np.random.default_rng(7).integers(0, CONFIG.vocab_size, (2, 19))


# ----------------------------------------------------------------------------- lean forward
def test_infer_logits_and_every_kept_activation_equal_the_training_forward_bitwise(model, idx):
    everything = list(activation_shapes(model.ops, CONFIG, *idx.shape))
    for keep in ([], ["blocks.1.attn.att"], everything):
        logits, kept = model.infer(idx, keep=keep)
        expected, _ = model.forward(idx)
        np.testing.assert_array_equal(logits, expected)
        assert list(kept) == keep
        for name, value in kept.items():
            np.testing.assert_array_equal(value, model.acts[name], err_msg=name)


def test_infer_returns_arrays_of_its_own_that_later_calls_leave_alone(model, idx):
    logits, kept = model.infer(idx, keep=["blocks.0.attn.att", "blocks.2.residual2"])
    saved = {"logits": logits.copy(), **{n: v.copy() for n, v in kept.items()}}
    model.infer(idx[:, ::-1].copy(), keep=["blocks.0.attn.att", "blocks.2.residual2"])
    model.infer(idx[:, :5].copy())
    for name, value in {"logits": logits, **kept}.items():
        np.testing.assert_array_equal(value, saved[name], err_msg=name)


def test_infer_allocates_nothing_for_backward_and_one_layer_of_attention_scratch():
    model = random_model(GPTConfig(n_layer=6, n_head=2, n_embd=16, vocab_size=11, block_size=16))
    B, T = 2, 16
    logits, kept = model.infer(np.zeros((B, T), np.int64), keep=["blocks.4.attn.att"])
    assert model.acts == {} and model.grad_acts == {} and model.trace == []
    square = (B, 2, T, T)
    # preatt and att of whichever layer ran last share two buffers; the kept one is the caller's
    assert len(model._scratch.free[square]) == 2
    assert kept["blocks.4.attn.att"].shape == square
    every = sum(int(np.prod(s)) * 4 for s in activation_shapes(model.ops, model.config, B, T).values())
    assert model._scratch.nbytes() + logits.nbytes + kept["blocks.4.attn.att"].nbytes < every / 3


# ----------------------------------------------------------------------------- from a block on
def test_a_forward_from_any_block_equals_the_full_forward_bitwise(model, idx):
    L = CONFIG.n_layer
    streams = [block_input(l) for l in range(L + 1)]
    logits, kept = model.infer(idx, keep=streams + ["blocks.2.attn.att", "ln_f.out"])
    for l in range(L + 1):
        given = kept[block_input(l)].copy()
        later = ["ln_f.out"] + (["blocks.2.attn.att"] if l <= 2 else [])
        ours, ours_kept = model.infer_from(l, given, keep=later)
        np.testing.assert_array_equal(ours, logits, err_msg=f"from block {l}")
        for name in later:
            np.testing.assert_array_equal(ours_kept[name], kept[name], err_msg=f"{name} from block {l}")
        np.testing.assert_array_equal(given, kept[block_input(l)])     # read, never written
        for m in range(l + 1, L + 1):
            stream, _ = model.infer_from(l, given, to_layer=m)
            np.testing.assert_array_equal(stream, kept[block_input(m)], err_msg=f"blocks {l}..{m - 1}")
    # a stream given to the wrong block (block 1's input to block 2) is far off
    wrong, _ = model.infer_from(2, kept[block_input(1)])
    assert np.abs(wrong - logits).max() > 0.1


def test_a_forward_from_a_block_runs_the_hooks_and_kernels_after_it(model, idx):
    with kernels.use(gelu_forward=lambda out, inp: np.maximum(inp, 0.0, out=out)):
        expected, relu_kept = model.infer(idx, keep=["blocks.0.residual2"])
        ours, _ = model.infer_from(1, relu_kept["blocks.0.residual2"])
    np.testing.assert_array_equal(ours, expected)
    _, kept = model.infer(idx, keep=["blocks.0.residual2"])
    model.hooks = {"blocks.1.attn.out": lambda z: z.fill(0.0)}
    try:
        expected, _ = model.infer(idx)
        ours, _ = model.infer_from(1, kept["blocks.0.residual2"])
    finally:
        model.hooks = {}
    np.testing.assert_array_equal(ours, expected)
    assert np.abs(ours - model.infer(idx)[0]).max() > 0.1


def test_a_forward_from_a_block_refuses_what_it_cannot_start_from(model):
    C = CONFIG.n_embd
    with pytest.raises(ValueError, match=r"0 <= layer < to_layer <= n_layer=3.*layer=4"):
        model.infer_from(4, np.zeros((1, 2, C)))
    with pytest.raises(ValueError, match=r"layer=2, to_layer=2"):
        model.infer_from(2, np.zeros((1, 2, C)), to_layer=2)
    with pytest.raises(ValueError, match=r"resid must be the residual stream \(B, T, C=32\).*\(2, 31\)"):
        model.infer_from(1, np.zeros((2, 31)))
    with pytest.raises(KeyError, match="blocks.0.attn.att"):
        model.infer_from(1, np.zeros((1, 2, C)), keep=["blocks.0.attn.att"])   # before block 1


def test_infer_leaves_the_training_record_of_the_last_forward_alone(model, idx):
    model.forward(idx, idx)
    trace, acts = model.trace, {n: a.copy() for n, a in model.acts.items()}
    model.infer(idx[:, :4].copy(), keep=["encoded"])
    assert model.trace is trace
    for name, value in acts.items():
        np.testing.assert_array_equal(model.acts[name], value, err_msg=name)
    model.backward()   # still possible: the record belongs to the forward before infer


def test_infer_runs_the_registered_kernels(model, idx):
    def doubled_gelu(out, inp):
        kernels.shipped("gelu_forward")(out, inp)
        out *= 2.0
    shipped, _ = model.infer(idx)
    shipped = shipped.copy()
    with kernels.use(gelu_forward=doubled_gelu):
        swapped, _ = model.infer(idx)
        expected, _ = model.forward(idx)
    np.testing.assert_array_equal(swapped, expected)
    assert np.abs(swapped - shipped).max() > 0.1


def test_infer_refuses_unknown_names_and_bad_tokens(model):
    with pytest.raises(KeyError, match=r"no activation named 'blocks.9.attn.att'.*'encoded'"):
        model.infer(np.zeros((1, 3), np.int64), keep=["blocks.9.attn.att"])
    with pytest.raises(KeyError, match="'losses'"):
        model.infer(np.zeros((1, 3), np.int64), keep=["losses"])
    with pytest.raises(ValueError, match="block_size"):
        model.infer(np.zeros((1, CONFIG.block_size + 1), np.int64))


# ----------------------------------------------------------------------------- decode attention
@pytest.mark.parametrize("B, n, new", [(1, 1, 1), (2, 17, 1), (3, 9, 4), (2, 12, 12)])
def test_attention_decode_equals_the_last_rows_of_attention_forward(B, n, new):
    NH, C = 4, 32
    qkv = np.random.default_rng(n).normal(size=(B, n, 3 * C)).astype(np.float32)
    out, preatt, att = np.empty((B, n, C), np.float32), np.empty((B, NH, n, n), np.float32), \
        np.empty((B, NH, n, n), np.float32)
    kernels.shipped("attention_forward")(out, preatt, att, qkv, NH)
    decoded = np.full((B, new, C), np.nan, np.float32)
    kernels.shipped("attention_decode")(decoded, qkv, NH)
    np.testing.assert_allclose(decoded, out[:, n - new:], rtol=1e-5, atol=1e-6)


def test_attention_decode_reads_a_cache_with_room_to_spare():
    """The KV cache is (B, capacity, 3C), of which generate passes the first n positions: a
    view that is not contiguous when B > 1."""
    B, n, NH, C = 2, 6, 2, 8
    cache = np.random.default_rng(0).normal(size=(B, 10, 3 * C)).astype(np.float32)
    view = cache[:, :n]
    out, tight = np.empty((B, 1, C), np.float32), np.empty((B, 1, C), np.float32)
    kernels.shipped("attention_decode")(out, view, NH)
    kernels.shipped("attention_decode")(tight, np.ascontiguousarray(view), NH)
    np.testing.assert_array_equal(out, tight)
    with pytest.raises(ValueError, match="last Tn <= n positions"):
        kernels.shipped("attention_decode")(np.empty((B, n + 1, C), np.float32), view, NH)


# ----------------------------------------------------------------------------- against transformers
def test_greedy_generation_is_token_identical_to_transformers(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model = randomize_params(GPT(CONFIG), seed=1)
    hf = transformers.GPT2LMHeadModel.from_pretrained(save_hf(model, tmp_path)).eval()
    prompt = np.random.default_rng(3).integers(0, CONFIG.vocab_size, (2, 6))
    new = CONFIG.block_size - prompt.shape[1]            # up to the last position both models know
    with torch.no_grad():
        expected = hf.generate(torch.from_numpy(prompt), max_new_tokens=new, min_new_tokens=new,
                               do_sample=False, pad_token_id=0, eos_token_id=None).numpy()
    assert len(np.unique(expected[:, 6:])) > 5, "a degenerate continuation would prove little"
    np.testing.assert_array_equal(model.generate(prompt, new, temperature=0), expected)

    def negated(out, qkv, n_head):          # the same comparison fails with a wrong decode kernel
        kernels.shipped("attention_decode")(out, qkv, n_head)
        out *= -1.0
    with kernels.use(attention_decode=negated):
        assert (model.generate(prompt, new, temperature=0) != expected).any()


def test_infer_logits_match_transformers(tmp_path, model, idx):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    hf = transformers.GPT2LMHeadModel.from_pretrained(save_hf(model, tmp_path)).eval()
    with torch.no_grad():
        expected = hf(torch.from_numpy(idx)).logits.numpy()
    logits, _ = model.infer(idx)
    err = np.abs(logits - expected).max() / np.abs(expected).max()
    assert err < 1e-5, f"max error {err:.2e} relative to the largest logit"


def test_gpt_needs_no_scratch_before_infer():
    assert GPT(CONFIG, init=False)._scratch.nbytes() == 0
