"""Attention explorer: where each token looks, in every layer and head, and how that forms.

    AttentionExplorer(model, tokenizer, prompt="40213577=7753120")   # any model
    ckpt = checkpoint.load("run.safetensors")   # a saved one (its tokenizer came with it)
    AttentionExplorer(ckpt.model, ckpt.tokenizer, prompt="40213577=7753120")
    AttentionExplorer(trainer=trainer)          # live: a validation row as the probe prompt,
    trainer.run(300)                            # a snapshot every N steps to scrub through

Row t of a map is query position t; its entries are the softmax weights over key positions
0..t (each row sums to 1; the causal mask leaves everything right of the diagonal at zero).
The overview grid shows every (layer, head); the layer and head sliders (or a click on the
grid) enlarge one, with the tokens on both axes. On the reverse task the answer positions
look at the mirrored prompt positions (an anti-diagonal); on the repeat task an induction
head looks one position after the earlier copy of the current letter (a shifted stripe).

The probe prompt runs on a shadow copy of the model (see explorer/interp/snapshots.py): the live model's
record of its last training step (model.acts, model.trace) is never overwritten.
"""
from __future__ import annotations

import html
import threading
from typing import TYPE_CHECKING

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..interp import AttentionProbe, SnapshotHistory
from ..tokenizers import tokenizer_from_dict
from ._figure import FigureWidget
from ._throttle import Throttle
from .tokens import token_labels
from .view import View

if TYPE_CHECKING:
    from ..model.gpt import GPT
    from ..tokenizers.base import Tokenizer
    from ..train.trainer import Trainer

COLORSCALE = "Blues"     # zero is white, so the masked upper triangle reads as empty


class AttentionExplorer(View):
    def __init__(self, model: GPT | None = None, tokenizer: Tokenizer | dict | None = None,
                 prompt: str | np.ndarray | list[int] | None = None, trainer: Trainer | None = None,
                 snapshot_every: int | None = None, max_snapshots: int = 64, max_tokens: int = 48,
                 row: int = 0) -> None:
        """model (or the trainer's); tokenizer (or the trainer's data's; a dict as a checkpoint
        stores it); prompt: text or token ids (default: validation row `row` of the trainer's
        data). With a trainer, a snapshot every `snapshot_every` steps (default: about 100
        over max_steps), at most `max_snapshots` kept; at most `max_tokens` tokens probed."""
        super().__init__()
        if model is None and trainer is None:
            raise ValueError("AttentionExplorer needs a model, or a trainer (its model is used)")
        self.trainer = trainer
        self.model = model if model is not None else trainer.model
        if tokenizer is None and trainer is not None:
            tokenizer = getattr(trainer.data, "tokenizer", None)
        if isinstance(tokenizer, dict):       # as a checkpoint stores it
            tokenizer = tokenizer_from_dict(tokenizer)
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        cfg = self.model.config
        self.n_layer, self.n_head = cfg.n_layer, cfg.n_head
        if snapshot_every is None:
            steps = trainer.config.max_steps if trainer is not None else 0
            snapshot_every = max(1, steps // 100) if steps else 10
        self.history = SnapshotHistory(snapshot_every, max_snapshots)
        self._throttle = Throttle(min_steps=1, min_seconds=0.25)
        self._lock = threading.RLock()    # the training thread and the UI both draw
        self._follow = True               # the step slider sits on the newest snapshot
        self._quiet = False               # True while the code (not the user) moves sliders
        self._build_widgets()
        self.set_prompt(self._prompt_ids(prompt, row))
        if trainer is not None:
            self._subscribe(trainer, "step", self._on_step)
            self._subscribe(trainer, "run_end", self._on_run_end)

    # ------------------------------------------------------------------ prompt
    def _prompt_ids(self, prompt, row=0):
        """The probe prompt as a 1-D array of token ids."""
        if prompt is None:
            if self.trainer is None:
                raise ValueError("AttentionExplorer needs a prompt (text or token ids) when it "
                                 "has no trainer whose data could supply one")
            rng = np.random.default_rng(0)
            x, _ = self.trainer.data.get_batch("val", row + 1, self.trainer.seq_len, rng)
            return np.asarray(x[row])
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise ValueError(f"the text prompt {prompt[:40]!r} needs a tokenizer: pass "
                                 f"tokenizer=, or give the prompt as token ids")
            return np.asarray(self.tokenizer.encode(prompt), dtype=np.int64)
        ids = np.asarray(prompt)
        if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"a prompt of token ids must be a 1-D integer array, got shape "
                             f"{ids.shape} and dtype {ids.dtype}")
        return ids

    def set_prompt(self, prompt):
        """Probe a new prompt (text or ids). Snapshots belong to one prompt: they restart."""
        ids = self._prompt_ids(prompt) if not isinstance(prompt, np.ndarray) else prompt
        limit = min(self.model.config.block_size, self.max_tokens)
        note = ""
        if len(ids) > limit:
            note = f" (the last {limit} of {len(ids)} tokens)"
            ids = ids[-limit:]
        with self._lock:
            self.probe = AttentionProbe(self.model, ids)
            self.labels = token_labels(self.tokenizer, ids)
            self.history.clear()
            self._follow = True
            self._prompt_note = note
            self._relabel_axes()
            self.snapshot()

    def _on_prompt_box(self, change):
        try:
            self.set_prompt(change["new"])
        except ValueError as e:   # e.g. a character the tokenizer does not know
            self.status.value = f'<span style="color:#b00">{html.escape(str(e))}</span>'

    # ------------------------------------------------------------------ snapshots
    def _current_step(self):
        # without a trainer there is no step count: "Probe now" replaces the one snapshot
        return self.trainer.step_count if self.trainer is not None else 0

    def snapshot(self):
        """Probe the model now and show it (a new snapshot, or the newest one replaced when
        the model has not stepped since). Works without a trainer too."""
        step = self._current_step()
        att = self.probe.attention()
        with self._lock:
            if self.history.steps and step <= self.history.steps[-1]:
                self.history.replace_last(step, att)
            else:   # kept even between the regular intervals: it was asked for
                self.history.add(step, att, force=True)
            self._sync_step_slider()
            self._draw()
            self.sync_figures()   # else a page reload or a saved notebook shows blank maps

    def restart(self):
        """Drop the snapshots and probe now: for when training starts over (e.g. subscribe it
        to BackgroundTrainer's "reset" event, so step 0 of the new run is kept too)."""
        with self._lock:
            self.history.clear()
            self._follow = True
            self.snapshot()

    def _on_step(self, metrics):
        """Runs on the training thread after each step: probe when due, redraw throttled."""
        step = metrics["step"]
        if self.history.steps and step <= self.history.steps[-1]:
            with self._lock:           # the step count went back: training started over
                self.history.clear()
                self._follow = True
        if not self.history.due(step):
            return
        att = self.probe.attention()
        with self._lock:
            if not self.history.add(step, att):
                return
            self._sync_step_slider()
            if self._follow and self._throttle.due(step):
                self._draw()

    def _on_run_end(self, payload):
        with self._lock:
            self._draw()
            self.sync_figures()

    # ------------------------------------------------------------------ widgets
    def _build_widgets(self):
        L, NH = self.n_layer, self.n_head
        self.layer = widgets.IntSlider(0, min=0, max=L - 1, description="layer")
        self.head = widgets.IntSlider(0, min=0, max=NH - 1, description="head")
        self.step_slider = widgets.IntSlider(0, min=0, max=0, readout=False, description="training step",
                                             style={"description_width": "initial"})  # not cut to "traini..."
        self.step_label = widgets.Label()
        self.refresh_button = widgets.Button(description="Probe now")
        self.status = widgets.HTML()
        self.prompt_box = widgets.Text(description="prompt", continuous_update=False,
                                       placeholder="type a prompt and press Enter")
        self.grid = self._make_grid()
        self.selected = self._make_selected()
        for slider in (self.layer, self.head):
            slider.observe(self._on_head_change, names="value")
        self.step_slider.observe(self._on_step_slider, names="value")
        self.refresh_button.on_click(lambda _: self.snapshot())
        self.prompt_box.observe(self._on_prompt_box, names="value")
        top = [self.prompt_box] if self.tokenizer is not None else []
        scrub = widgets.HBox([self.step_slider, self.step_label, self.refresh_button])
        if self.trainer is None:   # one snapshot only: nothing to scrub
            self.step_slider.layout.display = self.step_label.layout.display = "none"
        self.widget = widgets.VBox([
            *top, self.status, scrub,
            widgets.HBox([self.grid, widgets.VBox([self.layer, self.head, self.selected])])])

    def _make_grid(self):
        L, NH = self.n_layer, self.n_head
        cell = max(60, min(130, 780 // NH))
        fig = make_subplots(rows=L, cols=NH, horizontal_spacing=0.02, vertical_spacing=0.06,
                            subplot_titles=[f"L{l} H{h}" for l in range(L) for h in range(NH)])
        for l in range(L):
            for h in range(NH):
                fig.add_trace(go.Heatmap(
                    z=[[0.0]], coloraxis="coloraxis",
                    hovertemplate=(f"layer {l}, head {h}<br>query %{{y}} → key %{{x}}"
                                   "<br>p = %{z:.2f}<extra></extra>")), row=l + 1, col=h + 1)
        fig.update_xaxes(showticklabels=False)
        fig.update_yaxes(showticklabels=False, autorange="reversed")
        fig.update_annotations(font_size=10)
        fig.update_layout(coloraxis=dict(colorscale=COLORSCALE, cmin=0, cmax=1, showscale=False),
                          width=NH * cell + 40, height=L * cell + 60,
                          margin=dict(l=10, r=10, t=40, b=10),
                          title=dict(text="all heads (click one to enlarge)", font_size=12),
                          shapes=[dict(type="rect", xref="x domain", yref="y domain", x0=0, x1=1,
                                       y0=0, y1=1, line=dict(color="#d62728", width=2))])
        fig = FigureWidget(fig, lock=self._lock)
        for trace in fig.data:
            trace.on_click(self._on_grid_click)
        return fig

    def _make_selected(self):
        fig = FigureWidget(go.Heatmap(z=[[0.0]], zmin=0, zmax=1, colorscale=COLORSCALE,
                                      hovertemplate="%{text}<br>p = %{z:.3f}<extra></extra>"),
                           lock=self._lock)
        fig.update_layout(width=520, height=520, margin=dict(l=60, r=20, t=50, b=60),
                          xaxis=dict(title="key (looked at)", tickmode="array", tickangle=0),
                          yaxis=dict(title="query (looking)", tickmode="array",
                                     autorange="reversed"))
        return fig

    def _relabel_axes(self):
        """Token labels on the enlarged map's axes, and hover text for each cell. Positions
        are numbers on the axes (repeated tokens would merge as categories)."""
        T, labels = len(self.labels), self.labels
        ticks = dict(tickvals=list(range(T)), ticktext=labels)
        hover = [[f"query {labels[t]} ({t}) → key {labels[s]} ({s})" for s in range(T)]
                 for t in range(T)]
        shown = "".join(f"<code>{label}</code> " for label in labels)
        self.status.value = f"probe prompt, {T} tokens{self._prompt_note}: {shown}"
        with self.selected.batch_update():
            self.selected.data[0].text = hover
            self.selected.layout.xaxis.update(ticks)
            self.selected.layout.yaxis.update(ticks)

    # ------------------------------------------------------------------ drawing
    @property
    def snapshot_index(self):
        return self.step_slider.value

    def attention(self, index=None):
        """The (n_layer, n_head, T, T) maps of snapshot `index` (default: the one shown)."""
        return self.history.values[self.snapshot_index if index is None else index]

    def _sync_step_slider(self):
        """Fit the step slider to the history, keeping the viewed step (or the newest)."""
        n = len(self.history)
        viewed = getattr(self, "_viewed_step", None)
        if self._follow or viewed is None:
            index = n - 1
        else:   # thinning moves indices: stay on the kept step nearest the one viewed
            index = int(np.argmin(np.abs(np.array(self.history.steps) - viewed)))
        self._quiet = True
        try:
            self.step_slider.max = max(n - 1, 0)
            self.step_slider.value = index
        finally:
            self._quiet = False
        self._viewed_step = self.history.steps[index]
        self.step_label.value = (f"{self._viewed_step} (snapshot {index + 1} of {n}, "
                                 f"every {self.history.every} steps)")

    def _on_step_slider(self, change):
        if self._quiet:
            return
        with self._lock:
            self._follow = change["new"] == self.step_slider.max
            self._viewed_step = self.history.steps[change["new"]]
            self._sync_step_slider()
            self._draw()

    def _on_head_change(self, change):
        with self._lock:
            self._draw_selected()

    def _on_grid_click(self, trace, points, selector):
        if not points.point_inds:
            return
        layer, head = divmod(points.trace_index, self.n_head)
        self.layer.value, self.head.value = layer, head

    def _draw(self):
        """Every grid map and the enlarged one, from the snapshot the step slider selects."""
        att = self.attention()
        with self.grid.batch_update():
            for index, trace in enumerate(self.grid.data):
                trace.z = att[divmod(index, self.n_head)]
        self._draw_selected()
        self._throttle.mark(self._viewed_step)

    def _draw_selected(self):
        l, h = self.layer.value, self.head.value
        index = l * self.n_head + h
        suffix = "" if index == 0 else str(index + 1)
        with self.selected.batch_update():
            self.selected.data[0].z = self.attention()[l, h]
            self.selected.layout.title = (f"layer {l}, head {h} · training step "
                                          f"{self._viewed_step}")
        with self.grid.batch_update():
            self.grid.layout.shapes[0].update(xref=f"x{suffix} domain", yref=f"y{suffix} domain")

    # ------------------------------------------------------------------ static output
    def figures(self):
        """The enlarged map, then the grid of every head."""
        return [self.selected, self.grid]

    def summary(self):
        return (f"Attention explorer: {self.n_layer} layers x {self.n_head} heads on a "
                f"{len(self.labels)}-token probe prompt, {len(self.history)} snapshots up to "
                f"training step {self.history.steps[-1]}")

    def static_html(self):
        """The enlarged map as an HTML table of shaded cells: what a saved notebook shows on
        GitHub or nbviewer, where widgets do not run."""
        l, h = self.layer.value, self.head.value
        z = self.attention()[l, h]
        head = "".join(f"<th>{label}</th>" for label in self.labels)
        rows = []
        for t, label in enumerate(self.labels):
            cells = "".join(f'<td style="background:rgba(31,119,180,{p:.2f});width:14px"></td>'
                            for p in z[t])
            rows.append(f"<tr><th>{label}</th>{cells}</tr>")
        return (f"<p>Attention, layer {l}, head {h}, training step {self._viewed_step} "
                f"(run the notebook for the interactive explorer)</p>"
                f'<table style="border-collapse:collapse;font-size:10px"><tr><th></th>{head}</tr>'
                + "".join(rows) + "</table>")
