"""The decode session (explorer.model.generate.Decoder): a prompt prefilled once, then one
token per step through the KV cache, against full forward passes and transformers' GPT-2."""
import numpy as np
import pytest
from helpers import SPIED, randomize_params, spies

from explorer import GPT, Decoder, GPTConfig, kernels
from explorer.io.hf import save_hf

CONFIG = GPTConfig(n_layer=2, n_head=4, n_embd=32, vocab_size=29, block_size=12)
STEPS = 6


@pytest.fixture(scope="module")
def model():
    return randomize_params(GPT(CONFIG), seed=3)


def session_run(model, B=2, prompt_len=3, steps=STEPS, seed=0):
    """(all tokens (B, prompt_len + steps), [logits after the prompt, after each step])."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, CONFIG.vocab_size, (B, prompt_len + steps))
    session = model.decoder(tokens[:, :prompt_len])
    seen = [session.logits.copy()]
    for t in range(prompt_len, prompt_len + steps):
        seen.append(session.step(tokens[:, t]).copy())
        np.testing.assert_array_equal(session.tokens, tokens[:, :t + 1])
    return tokens, seen


def test_session_logits_after_each_step_equal_a_full_forward(model):
    tokens, seen = session_run(model)
    worst = 0.0
    for k, logits in enumerate(seen):
        full, _ = model.infer(tokens[:, :3 + k])
        np.testing.assert_allclose(logits, full[:, -1], rtol=1e-5, atol=1e-5)
        worst = max(worst, float(np.max(np.abs(logits - full[:, -1]) / np.abs(full[:, -1]).max())))
    print(f"decoder vs full forward, max |diff| / max |logit|: {worst:.2e}")
    # a wrong position (the step's token placed one position later) is far off
    shifted = model.decoder(tokens[:, :3])
    shifted.step(tokens[:, 3])
    wrong = model.decoder(np.concatenate([tokens[:, :3], tokens[:, :1]], axis=1)).step(tokens[:, 3])
    assert np.abs(wrong - shifted.logits).max() > 0.1


def test_session_logits_equal_transformers(model, tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    hf = transformers.GPT2LMHeadModel.from_pretrained(save_hf(model, tmp_path)).eval()
    tokens, seen = session_run(model, seed=1)
    worst = 0.0
    with torch.no_grad():
        for k, logits in enumerate(seen):
            theirs = hf(torch.from_numpy(tokens[:, :3 + k])).logits[:, -1].numpy()
            np.testing.assert_allclose(logits, theirs, rtol=1e-4, atol=1e-4)
            worst = max(worst, float(np.max(np.abs(logits - theirs))))
    print(f"decoder vs transformers, max |diff|: {worst:.2e}")
    assert np.abs(seen[-1] - seen[-2]).max() > 0.1, "the steps must change the logits for this to mean much"


def test_a_step_runs_every_kernel_on_the_new_position_only(model):
    B, L = 2, CONFIG.n_layer
    calls, rows = [], []
    with kernels.use(**spies(calls)):
        spied = kernels.get("attention_decode")

        def counting_rows(out, qkv, n_head):
            rows.append(out.shape[1])
            spied(out, qkv, n_head)
        with kernels.use(attention_decode=counting_rows):
            session = model.decoder(np.zeros((B, 5), np.int64))
            assert {shape[:2] for _, shape in calls} == {(B, 5)} and rows == [5] * L   # the prefill
            calls.clear(), rows.clear()
            session.step(np.ones(B, np.int64))
            session.step(np.ones(B, np.int64))
    assert sorted({name for name, _ in calls}) == sorted(SPIED)
    assert {shape[:2] for name, shape in calls if name != "attention_decode"} == {(B, 1)}
    # attention reads the keys and values of every position so far (6, then 7), computes 1 row
    assert [shape[1] for name, shape in calls if name == "attention_decode"] == [6] * L + [7] * L
    assert rows == [1] * 2 * L


def test_capacity_and_bad_steps_are_refused_with_what_was_expected(model):
    block = CONFIG.block_size
    session = model.decoder(np.zeros((1, block - 1), np.int64))
    session.step([3])
    with pytest.raises(ValueError, match=rf"full: it holds {block} positions.*block_size={block}"):
        session.step([4])
    with pytest.raises(ValueError, match=r"capacity must be an integer in \[1, block_size=12\].*13"):
        model.decoder([1, 2], capacity=block + 1)
    with pytest.raises(ValueError, match="prompt has 4 tokens, more than this decoder's capacity of 3"):
        model.decoder([1, 2, 3, 4], capacity=3)
    with pytest.raises(ValueError, match=r"one token per row: shape \(1,\) or \(1, 1\), got \(2,\)"):
        model.decoder([1, 2]).step([1, 2])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model.decoder([1, 2]).step([CONFIG.vocab_size])


def test_slide_starts_over_on_the_last_block_of_tokens(model):
    block = CONFIG.block_size
    tokens = np.random.default_rng(2).integers(0, CONFIG.vocab_size, (2, block + 3))
    session = model.decoder(tokens[:, :block])
    for t in range(block, block + 3):
        logits = session.step(tokens[:, t], slide=True)
        np.testing.assert_array_equal(session.tokens, tokens[:, t + 1 - block:t + 1])
        full, _ = model.infer(tokens[:, t + 1 - block:t + 1])
        np.testing.assert_allclose(logits, full[:, -1], rtol=1e-5, atol=1e-5)


def test_reset_and_a_changed_model_mean_reading_the_context_again(random_gpt):
    model = random_gpt(seed=5, **vars(CONFIG))
    session = Decoder(model, [[1, 2, 3]])
    first = session.logits.copy()
    session.step([4])
    np.testing.assert_array_equal(session.reset(), first)
    np.testing.assert_array_equal(session.tokens, [[1, 2, 3]])
    model.params["blocks.1.mlp.fc.weight"] *= 1.01          # as a training step would
    assert not session.is_current()
    with pytest.raises(RuntimeError, match="weights or kernels changed.*reset"):
        session.step([4])
    session.reset()
    np.testing.assert_allclose(session.step([4]), model.infer([[1, 2, 3, 4]])[0][:, -1], rtol=1e-5, atol=1e-5)
    with kernels.use(gelu_forward=lambda out, inp: np.maximum(inp, 0.0, out=out)):
        with pytest.raises(RuntimeError, match="weights or kernels changed"):
            session.step([5])
    assert session.is_current()                            # the shipped kernel is back
    np.testing.assert_array_equal(session.reset([[7]]), model.decoder([[7]]).logits)
