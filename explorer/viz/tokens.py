"""Tokens and sampling: what the model reads, and what it would write next.

    TokenView(tokenizer, "Hello world")                    # text coloured token by token
    TokenView({"char": char_tok, "gpt2": GPT2Tokenizer()}, text)   # tokenizers side by side
    SamplingView(model, tokenizer, prompt="ROMEO:")        # next-token bars, sample, generate

Every piece of text that reaches the browser is escaped (html.escape): a token such as "<s>"
or "</div>" must show as text, not be read as markup.
"""
from __future__ import annotations

import codecs
import html
from typing import TYPE_CHECKING

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go

from ..model.generate import Decoder
from ._figure import FigureWidget
from .view import LIVE_HINT, View, plain_text

if TYPE_CHECKING:
    from ..model.gpt import GPT
    from ..tokenizers.base import Tokenizer

# neighbouring tokens alternate between these backgrounds so every boundary is visible
PALETTE = ("#fde2a7", "#b8e0f6", "#c9ecc1", "#f6c6d8")
GENERATED = "#ffd1d1"   # the background of sampled tokens in the SamplingView
_VISIBLE_WHITESPACE = {" ": "\u2423", "\n": "\u21b5", "\t": "\u21e5", "\r": "\u240d"}


def token_label(text):
    """A token's text as an axis or bar label: whitespace made visible (' ' -> '␣',
    newline -> '↵'), then HTML-escaped."""
    return html.escape("".join(_VISIBLE_WHITESPACE.get(ch, ch) for ch in text))


def token_labels(tokenizer, ids):
    """Escaped labels for a list of ids (the ids themselves without a tokenizer)."""
    ids = [int(i) for i in ids]
    if tokenizer is None:
        return [str(i) for i in ids]
    return [token_label(s) for s in tokenizer.token_strings(ids)]


def token_pieces(tokenizer, ids):
    """[(text, [ids])]: the text each token stands for, in order; "".join of the texts is the
    decoded text. A byte-level BPE can split one character over several tokens (an emoji is
    often 2-3 tokens); those tokens share one piece, since no part of them is text alone."""
    ids = [int(i) for i in ids]
    if not hasattr(tokenizer, "token_bytes"):   # e.g. characters: every token is text
        return [(text, [i]) for text, i in zip(tokenizer.token_strings(ids), ids)]
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pieces, text, group = [], "", []
    for i in ids:
        text += decoder.decode(tokenizer.token_bytes(i))
        group.append(i)
        if decoder.getstate()[0] == b"":       # no bytes of an unfinished character pending
            pieces.append((text, group))
            text, group = "", []
    if group:
        pieces.append((text + decoder.decode(b"", final=True), group))
    return pieces


def tokens_html(tokenizer, ids, generated_from=None):
    """The tokens as coloured <span>s with the ids and token text on hover (title). Tokens
    from index `generated_from` on are marked as sampled."""
    spans, index = [], 0
    for n, (text, group) in enumerate(token_pieces(tokenizer, ids)):
        sampled = generated_from is not None and index >= generated_from
        colour = GENERATED if sampled else PALETTE[n % len(PALETTE)]
        what = " + ".join(str(i) for i in group)
        title = (f"id {what}: {text!r}" if len(group) == 1 else
                 f"ids {what}: {text!r} (one character split over {len(group)} tokens)")
        spans.append(f'<span title="{html.escape(title, quote=True)}" style="background:{colour};'
                     f'border-radius:2px">{html.escape(text)}</span>')
        index += len(group)
    return ('<div style="font-family:monospace;white-space:pre-wrap;line-height:1.7">'
            + "".join(spans) + "</div>")


class TokenView(View):
    """Text coloured by token, for one tokenizer or several side by side (a dict name ->
    tokenizer). Edit the text box to retokenize."""

    def __init__(self, tokenizer: Tokenizer | dict[str, Tokenizer], text: str = "") -> None:
        super().__init__()
        self.tokenizers = dict(tokenizer) if isinstance(tokenizer, dict) else {"": tokenizer}
        if not self.tokenizers:
            raise ValueError("TokenView needs a tokenizer, or a dict of name -> tokenizer; got {}")
        self.text_box = widgets.Textarea(value=text, continuous_update=False,
                                         layout=widgets.Layout(width="100%"))
        self.outputs = {name: widgets.HTML() for name in self.tokenizers}
        self.text_box.observe(lambda change: self._render(), names="value")
        self._render()
        rows = [widgets.VBox([widgets.HTML(f"<b>{html.escape(name)}</b>"), out]) if name else out
                for name, out in self.outputs.items()]
        self.widget = widgets.VBox([self.text_box, *rows])

    @property
    def text(self):
        return self.text_box.value

    def ids(self, name=""):
        return self.tokenizers[name].encode(self.text)

    def pieces(self, name=""):
        return token_pieces(self.tokenizers[name], self.ids(name))

    def _render(self):
        for name, tokenizer in self.tokenizers.items():
            self.outputs[name].value = self._html_for(tokenizer)

    def _html_for(self, tokenizer):
        try:
            ids = tokenizer.encode(self.text)
        except ValueError as e:   # e.g. a character outside a char tokenizer's alphabet
            return f'<span style="color:#b00">{html.escape(str(e))}</span>'
        ratio = len(self.text) / len(ids) if ids else 0.0
        summary = (f"<small>{len(ids)} tokens, {len(self.text)} characters "
                   f"({ratio:.2f} characters per token)</small>")
        return tokens_html(tokenizer, ids) + summary

    def static_html(self):
        """The coloured text (no widget manager needed: GitHub, nbviewer)."""
        rows = "".join((f"<strong>{html.escape(name)}</strong>" if name else "") + out.value
                       for name, out in self.outputs.items())
        return f"<p><strong>Tokens</strong> (a static copy: {LIVE_HINT})</p>{rows}"

    def summary(self):
        return f"Tokens of {self.text[:60]!r}: {self._counts()}"

    def _counts(self):
        """'17 tokens', or 'char: 17 tokens, gpt2: 9 tokens' (or what a tokenizer objected to)."""
        parts = []
        for name, tokenizer in self.tokenizers.items():
            try:
                count = f"{len(tokenizer.encode(self.text))} tokens"
            except ValueError as e:
                count = str(e)
            parts.append(f"{name}: {count}" if name else count)
        return ", ".join(parts)


def compare_tokenizers(text, **tokenizers):
    """compare_tokenizers(text, char=..., gpt2=...): one TokenView with a row per tokenizer."""
    return TokenView(tokenizers, text)


# --------------------------------------------------------------------- sampling
def next_token_distribution(logits, temperature=1.0, top_k=None):
    """Probabilities (V,) that sampling draws from: softmax(logits / temperature) over the
    top_k largest logits (ties at the k-th value kept), zero elsewhere. temperature 0 puts all
    the mass on the most likely token (greedy)."""
    logits = np.asarray(logits, dtype=np.float64)
    if temperature < 0 or not np.isfinite(temperature):
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if temperature == 0:
        probs = np.zeros_like(logits)
        probs[np.argmax(logits)] = 1.0
        return probs
    scaled = logits / temperature
    if top_k and top_k < len(scaled):
        kth = np.partition(scaled, -top_k)[-top_k]
        scaled = np.where(scaled < kth, -np.inf, scaled)
    probs = np.exp(scaled - scaled.max())
    return probs / probs.sum()


def _start_token(tokenizer):
    """GPT-2's <|endoftext|> id, which begins every document it saw, or None."""
    try:
        ids = tokenizer.encode("<|endoftext|>")
    except ValueError:
        return None
    return ids[0] if len(ids) == 1 else None


class SamplingView(View):
    """The next-token distribution for a prompt, as bars (top `n_bars`), after temperature and
    top-k; "Next token" samples one from exactly those bars, "Generate 50" samples 50 that way,
    "Reset" goes back to the prompt and the seed.

    The view holds a decode session (explorer.model.Decoder, `self.session`): the prompt runs
    through the model once, and each new token runs it on that one position against the KV
    cache, not on the whole context again. Once the context is block_size tokens long, each
    new token reads the last block_size again (the model has no position past block_size).
    When the model's weights or kernels changed since the session read the context (training
    on another thread, a swapped kernel), the next token reads the context again with the model
    as it is. The bars show the logits of the last click, not of weights changed since. The
    session runs through the KV-cache path of explorer.model.generate, so model.acts /
    model.trace (what other views show) are kept."""

    def __init__(self, model: GPT, tokenizer: Tokenizer, prompt: str = "", seed: int = 0,
                 temperature: float = 1.0, top_k: int = 0, n_bars: int = 20, burst: int = 50) -> None:
        super().__init__()
        self.model, self.tokenizer, self.seed = model, tokenizer, seed
        self.n_bars, self.burst = min(n_bars, model.config.vocab_size), burst
        self.prompt_box = widgets.Text(value=prompt, description="prompt",
                                       continuous_update=False)
        self.temperature = widgets.FloatSlider(value=temperature, min=0.0, max=2.0, step=0.05,
                                               description="temperature")
        self.top_k = widgets.IntSlider(value=top_k, min=0, max=model.config.vocab_size,
                                       description="top-k (0: off)")
        self.next_button = widgets.Button(description="Next token")
        self.burst_button = widgets.Button(description=f"Generate {burst}")
        self.reset_button = widgets.Button(description="Reset")
        self.text = widgets.HTML()
        self.figure = self._make_figure()
        self.next_button.on_click(lambda _: self.next_token())
        self.burst_button.on_click(lambda _: self.generate())
        self.reset_button.on_click(lambda _: self.reset())
        self.prompt_box.observe(lambda _: self.reset(), names="value")
        for slider in (self.temperature, self.top_k):
            slider.observe(lambda _: self._show(), names="value")
        self.widget = widgets.VBox([
            self.prompt_box, widgets.HBox([self.temperature, self.top_k]),
            widgets.HBox([self.next_button, self.burst_button, self.reset_button]),
            self.text, self.figure])
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self):
        """Back to the prompt, and to the seed: the same clicks give the same text again. A new
        decode session reads the prompt (its last block_size tokens)."""
        self.rng = np.random.default_rng(self.seed)
        self.prompt_ids = list(self.tokenizer.encode(self.prompt_box.value))
        if not self.prompt_ids and _start_token(self.tokenizer) is not None:
            self.prompt_ids = [_start_token(self.tokenizer)]
        self.tokens = list(self.prompt_ids)
        self.session = None
        if self.tokens:
            self.session = Decoder(self.model, [self.tokens[-self.model.config.block_size:]])
        self._show()

    @property
    def _logits(self):
        """Logits (V,) of the position after the last token (None without any token)."""
        return None if self.session is None else self.session.logits[0].astype(np.float64)

    def probabilities(self):
        """The distribution the bars show and the next token is drawn from (V,)."""
        if self.session is None:
            return None
        return next_token_distribution(self._logits, self.temperature.value, self.top_k.value)

    def next_token(self):
        """Append one token sampled from probabilities()."""
        if self.session is None:
            return None
        token = self._sample_one()
        self._show()
        return token

    def generate(self, n=None):
        """Append n (default: burst) tokens, each sampled as next_token() samples it."""
        n = self.burst if n is None else n
        if self.session is None:
            return []
        new = [self._sample_one() for _ in range(n)]
        self._show()
        return new

    def _sample_one(self):
        """Draw a token from probabilities(), append it, and run the session on it."""
        probs = self.probabilities()
        token = int(self.rng.choice(len(probs), p=probs))
        self.tokens.append(token)
        with self.model.lock:
            if self.session.is_current():
                self.session.step([token], slide=True)
            else:   # the model changed under the cache: read the context with the model as it is
                self.session.reset([self.tokens[-self.model.config.block_size:]])
        return token

    # ------------------------------------------------------------------ display
    def _make_figure(self):
        fig = FigureWidget(go.Bar(x=[], y=[], orientation="h", marker_color="#4c78a8",
                                  hovertemplate="%{text}<extra></extra>"))
        fig.update_layout(height=40 + 22 * self.n_bars, width=520,
                          margin=dict(l=90, r=20, t=30, b=30),
                          title=f"next-token probabilities (top {self.n_bars})",
                          xaxis=dict(range=[0, 1], title="probability"),
                          yaxis=dict(autorange="reversed", tickmode="array"))
        return fig

    def _show(self):
        if self.session is None:
            self.text.value = ("<i>Type a prompt: the model needs at least one token to "
                               "predict the next one.</i>")
            with self.figure.batch_update():
                self.figure.data[0].update(x=[], y=[], text=[])
            return
        self.text.value = tokens_html(self.tokenizer, self.tokens, len(self.prompt_ids))
        probs = self.probabilities()
        top = np.argsort(-probs, kind="stable")[:self.n_bars]
        labels = token_labels(self.tokenizer, top)
        hover = [f"id {i}: {label}<br>p = {probs[i]:.4f}" for i, label in zip(top, labels)]
        with self.figure.batch_update():
            self.figure.data[0].update(x=probs[top], y=np.arange(len(top)), text=hover,
                                       textposition="none")
            self.figure.layout.yaxis.update(tickvals=list(range(len(top))), ticktext=labels)
        self.sync_figures()   # a reload or a saved notebook shows these bars

    def _top_tokens(self, n=5):
        """[(escaped label, probability)] of the n most likely next tokens ([] without any)."""
        probs = self.probabilities()
        if probs is None:
            return []
        top = np.argsort(-probs, kind="stable")[:n]
        return list(zip(token_labels(self.tokenizer, top), probs[top]))

    def figures(self):
        return [self.figure]

    def static_html(self):
        rows = "".join(f"<tr><td><code>{label}</code></td><td>{p:.1%}</td></tr>"
                       for label, p in self._top_tokens())
        return (f"<p><strong>Next-token sampling</strong> (a static copy: {LIVE_HINT})</p>"
                f"{self.text.value}<table><tr><th>next token</th><th>probability</th></tr>{rows}</table>")

    def summary(self):
        likely = ", ".join(f"{plain_text(label)!r} {p:.1%}" for label, p in self._top_tokens()) or "no prompt"
        return f"Next-token sampling after {plain_text(self.text.value)!r}: most likely next {likely}"
