"""TokenView and SamplingView, driven without a browser."""
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from helpers import spies

from explorer import kernels
from explorer.tokenizers import CharTokenizer, GPT2Tokenizer, train_bpe
from explorer.viz import SamplingView, TokenView
from explorer.viz.tokens import compare_tokenizers, next_token_distribution

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TIKTOKEN_CACHE = SHARED / "tiktoken_cache"
needs_gpt2_files = pytest.mark.skipif(not TIKTOKEN_CACHE.is_dir(),
                                      reason=f"GPT-2 tokenizer files not found in {TIKTOKEN_CACHE}")
TEXT = "Hello <s>wörld</s> & 'quotes'\n  🦊 敏捷的 tabs\there"


class Spans(HTMLParser):
    """The text and title of every <span>, as a browser would read them (unescaped)."""

    def __init__(self, markup):
        super().__init__(convert_charrefs=True)
        self.texts, self.titles, self._open = [], [], False
        self.feed(markup)

    def handle_starttag(self, tag, attrs):
        assert tag in ("span", "div", "small"), f"unexpected tag <{tag}>: something was not escaped"
        if tag == "span":
            self._open = True
            self.texts.append("")
            self.titles.append(dict(attrs)["title"])

    def handle_endtag(self, tag):
        self._open = False if tag == "span" else self._open

    def handle_data(self, data):
        if self._open:
            self.texts[-1] += data


@pytest.fixture
def gpt2(monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(TIKTOKEN_CACHE))
    return GPT2Tokenizer(download=False)


def check_round_trip(view, name, tokenizer):
    ids = tokenizer.encode(view.text)
    pieces = view.pieces(name)
    assert "".join(text for text, _ in pieces) == view.text
    assert [i for _, group in pieces for i in group] == ids
    markup = view.outputs[name].value
    bare = re.sub(r"</?(span|div|small)\b[^>]*>", "", markup)
    assert "<" not in bare and ">" not in bare         # every < of the text was escaped
    spans = Spans(markup)
    assert "".join(spans.texts) == view.text          # the page shows exactly the text
    assert len(spans.texts) == len(pieces)
    return pieces, spans


def test_char_tokens_round_trip_with_one_span_per_character():
    tok = CharTokenizer.from_text(TEXT)
    view = TokenView(tok, TEXT)
    pieces, spans = check_round_trip(view, "", tok)
    assert len(pieces) == len(TEXT)
    assert spans.titles[6] == f"id {tok.encode('<')[0]}: '<'"
    styles = view.outputs[""].value.split('style="background:')[1:]
    assert styles[0][:7] != styles[1][:7]               # neighbours get different colours
    assert f"{len(TEXT)} tokens" in view.outputs[""].value


@needs_gpt2_files
def test_gpt2_tokens_round_trip_and_split_characters_share_a_span(gpt2):
    view = TokenView(gpt2, TEXT)
    pieces, spans = check_round_trip(view, "", gpt2)
    assert len(pieces) < len(gpt2.encode(TEXT))        # the fox emoji is 3 byte-level tokens
    fox = next(i for i, (text, _) in enumerate(pieces) if "🦊" in text)
    assert len(pieces[fox][1]) > 1 and "split over" in spans.titles[fox]
    assert ("Hello", [15496]) in pieces


def test_trained_bpe_tokens_round_trip():
    corpus = ("the cat sat on the mat; the cat ate the rat. " * 30) + TEXT
    bpe = train_bpe(corpus, 300)
    view = TokenView(bpe, "the cat sat on the <mat> 🦊")
    pieces, _ = check_round_trip(view, "", bpe)
    assert any(len(text) > 3 for text, _ in pieces)    # merges made multi-character tokens


@needs_gpt2_files
def test_comparison_shows_one_row_per_tokenizer_and_follows_edits(gpt2):
    char = CharTokenizer.from_text(TEXT + "xyz")
    view = compare_tokenizers(TEXT, char=char, gpt2=gpt2)
    assert set(view.outputs) == {"char", "gpt2"}
    view.text_box.value = "xyz <b>"
    for name, tok in view.tokenizers.items():
        check_round_trip(view, name, tok)
    view.text_box.value = "Q?"                          # not in the char alphabet
    assert "not in this tokenizer" in view.outputs["char"].value
    assert Spans(view.outputs["gpt2"].value).texts == ["Q", "?"]
    assert "<b>" not in view._repr_mimebundle_()["text/html"]


# --------------------------------------------------------------------- sampling
def test_next_token_distribution_temperature_and_top_k():
    logits = np.array([1.0, 3.0, 2.0, -1.0, 0.5, 2.5])
    softmax = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    np.testing.assert_allclose(next_token_distribution(logits, 1.0, None), softmax)
    np.testing.assert_array_equal(next_token_distribution(logits, 0.0), np.eye(6)[1])
    assert next_token_distribution(logits, 0.05).max() > 0.99
    assert next_token_distribution(logits, 100.0).max() < 0.2   # hot: near uniform
    k3 = next_token_distribution(logits, 1.0, 3)
    assert np.count_nonzero(k3) == 3 and set(np.nonzero(k3)[0]) == {1, 2, 5}
    np.testing.assert_allclose(k3.sum(), 1.0)
    np.testing.assert_allclose(k3[[1, 2, 5]], softmax[[1, 2, 5]] / softmax[[1, 2, 5]].sum())
    with pytest.raises(ValueError, match="temperature"):
        next_token_distribution(logits, -1.0)


@pytest.fixture
def sampler(random_gpt):
    tok = CharTokenizer("abcdefghijklmnopqrstuvwxyz <>")
    model = random_gpt(n_layer=2, n_head=2, n_embd=32, vocab_size=tok.vocab_size, block_size=24)
    return SamplingView(model, tok, prompt="the <cat> ", seed=3)


def bars(view):
    return np.asarray(view.figure.data[0].x)


def test_bars_follow_temperature_and_top_k(sampler):
    view = sampler
    logits, _ = view.model.forward(np.array([view.tokens]))
    np.testing.assert_allclose(view._logits, logits[0, -1], atol=1e-4)   # the KV-cache path
    assert len(bars(view)) == 20 and np.all(np.diff(bars(view)) <= 0)
    labels = view.figure.layout.yaxis.ticktext
    assert "&lt;" in labels and "<" not in "".join(labels)
    view.temperature.value = 0.0
    assert bars(view)[0] == 1.0 and not bars(view)[1:].any()
    top = int(np.argmax(view._logits))
    assert view.figure.data[0].text[0].startswith(f"id {top}:")
    view.temperature.value, view.top_k.value = 1.0, 5
    b = bars(view)
    assert np.count_nonzero(b) == 5 and b[5:].sum() == 0 and abs(b.sum() - 1) < 1e-9
    view.top_k.value = 0
    assert np.count_nonzero(bars(view)) == 20
    np.testing.assert_allclose(view.figure._widget_data[0]["x"], bars(view))   # saved state


def test_next_token_generate_and_reset(sampler):
    view = sampler
    prompt = list(view.tokens)
    greedy = int(np.argmax(view.model.forward(np.array([prompt]))[0][0, -1]))
    trace = view.model.trace
    view.temperature.value = 0.0
    token = view.next_token()
    assert view.tokens == prompt + [token] and token == greedy
    view.temperature.value = 1.0
    view.next_button.click()
    assert len(view.tokens) == len(prompt) + 2
    view.burst_button.click()
    assert len(view.tokens) == len(prompt) + 52        # longer than block_size: still fine
    assert view.text.value.count("#ffd1d1") == 52      # sampled tokens are marked
    first_run = list(view.tokens)
    view.reset_button.click()
    assert view.tokens == prompt
    view.temperature.value = 0.0
    view.next_button.click()
    view.temperature.value = 1.0
    view.next_button.click()
    view.burst_button.click()
    assert view.tokens == first_run                    # same seed, same clicks, same text
    assert view.model.trace is trace        # sampling left the model's record alone


def softmax_of_a_full_forward(view):
    """The next-token distribution computed independently: a full forward on the last
    block_size tokens shown, softmax in float64."""
    logits, _ = view.model.infer([view.tokens[-view.model.config.block_size:]])
    z = logits[0, -1].astype(np.float64)
    return np.exp(z - z.max()) / np.exp(z - z.max()).sum()


def test_clicks_step_the_session_on_one_position_and_the_bars_equal_a_full_forward(sampler):
    view = sampler
    calls = []
    with kernels.use(**spies(calls)):
        view.reset_button.click()          # the session reads the prompt with the spied kernels
        assert {shape[:2] for name, shape in calls if name != "attention_decode"} == {(1, 10)}
        calls.clear()
        view.next_button.click()
        view.next_button.click()
    # two clicks: every kernel ran on one position only; attention read 11, then 12 positions
    assert {shape[:2] for name, shape in calls if name != "attention_decode"} == {(1, 1)}
    assert [shape[1] for name, shape in calls if name == "attention_decode"] == [11, 11, 12, 12]
    assert len(view.tokens) == 12 and view.session.tokens.tolist() == [view.tokens]
    expected = softmax_of_a_full_forward(view)
    np.testing.assert_allclose(view.probabilities(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bars(view), np.sort(expected)[::-1][:20], rtol=1e-5, atol=1e-6)
    view.burst_button.click()              # 62 tokens: the context slides past block_size=24
    np.testing.assert_array_equal(view.session.tokens[0], view.tokens[-24:])
    np.testing.assert_allclose(view.probabilities(), softmax_of_a_full_forward(view), rtol=1e-5, atol=1e-6)
    view.model.params["blocks.0.mlp.fc.weight"] *= 1.5     # as training on another thread would
    view.next_button.click()               # the session reads the context again, new weights
    np.testing.assert_allclose(view.probabilities(), softmax_of_a_full_forward(view), rtol=1e-5, atol=1e-6)


def test_empty_prompt_asks_for_one(sampler):
    view = sampler
    view.prompt_box.value = ""
    assert view.tokens == [] and "Type a prompt" in view.text.value
    assert view.next_token() is None and len(view.figure.data[0].x) == 0
    view.prompt_box.value = "ab"
    assert view.tokens == view.tokenizer.encode("ab") and len(bars(view)) == 20
