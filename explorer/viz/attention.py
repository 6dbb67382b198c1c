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
record of its last training step (model.acts, model.trace) is never overwritten. Without a
trainer there is no such record to keep, and the model itself runs the probe (shadow=True
forces the copy).

At full size (GPT-2 small: 12 x 12 heads, prompts up to 1,024 tokens) nothing holds every map:
a snapshot keeps each layer's queries and keys (75 MB at T=1024, against 600 MB of maps), and
the selected head's map is computed when it is selected (milliseconds). The grid shows each
head pooled to at most g x g blocks (g = 16 for 12 x 12 heads: GRID_VALUES), the enlarged map at most
SELECTED_CELLS x SELECTED_CELLS (see `pool_attention`): what the browser receives stays
small, whatever T.
"""
from __future__ import annotations

import html
import math
import threading
from typing import TYPE_CHECKING

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go

from ..interp import AttentionProbe, SnapshotHistory
from ..tokenizers import tokenizer_from_dict
from ._decimate import label_positions
from ._figure import FigureWidget, for_browser
from ._throttle import Throttle
from .tokens import token_labels
from .view import View

if TYPE_CHECKING:
    from ..model.gpt import GPT
    from ..tokenizers.base import Tokenizer
    from ..train.trainer import Trainer

COLORSCALE = "Blues"     # zero is white, so the masked upper triangle reads as empty
GRID_CELLS = 32          # each grid map: at most 32 x 32 blocks ...
GRID_VALUES = 144 * 16**2   # ... and all of them at most this many values (12 x 12 heads: 16 x 16)
SELECTED_CELLS = 256     # the enlarged map: at most 256 x 256 blocks (T=1024: 4 x 4 tokens each)
STATIC_CELLS = 48        # a saved notebook's static copy: at most 48 x 48 shaded cells
HOVER_TEXT_TOKENS = 64   # up to this T, every cell of the enlarged map names its two tokens
# The enlarged map's plot area is ~370 px a side; a label needs ~14 px across its line (11 px
# font) and ~7 px per character along it. So at most 26 labels per axis, and x's turn upright
# (-90 degrees) when they are too wide to sit side by side.
PLOT_PX, LABEL_PX, CHAR_PX = 370, 14, 7
AXIS_LABELS = PLOT_PX // LABEL_PX
LIVE_TOKENS = 48         # the probe prompt's default length while a trainer runs
STATUS_TOKENS = 96       # the status line lists the prompt's tokens up to this many
# maps reach the browser rounded (see for_browser) to what the hover shows
SELECTED_DECIMALS, GRID_DECIMALS = 3, 2


def block_edges(n, cells):
    """Edges of min(n, cells) blocks that cover positions 0..n-1 as evenly as possible."""
    return np.linspace(0, n, min(n, cells) + 1).round().astype(np.int64)


def pool_attention(att, cells):
    """(..., T, T) attention -> (..., g, g), g = min(T, cells): each block is the mean over its
    queries of the attention they put on its keys (summed). Rows still sum to 1, so a head that
    looks at one token shows as one dark block, whatever the pooling; g = T is att itself."""
    T = att.shape[-1]
    if T <= cells:
        return np.asarray(att, dtype=np.float32)
    edges = block_edges(T, cells)
    keys = np.add.reduceat(att, edges[:-1], axis=-1)                  # (..., T, g)
    sizes = np.diff(edges).astype(np.float32)[:, None]
    return (np.add.reduceat(keys, edges[:-1], axis=-2) / sizes).astype(np.float32)


def grid_cells(n_layer, n_head, T):
    """g: each grid map's side in blocks, so that all n_layer x n_head maps fit GRID_VALUES."""
    return min(T, GRID_CELLS, max(4, math.isqrt(GRID_VALUES // (n_layer * n_head))))


class Snapshot:
    """One probe: the record of queries and keys, and the pooled grid (computed once, on use)."""

    def __init__(self, record):
        self.record = record
        self._grid = None

    def grid(self):
        """(n_layer, n_head, g, g): every head pooled to g x g blocks (see grid_cells)."""
        if self._grid is None:
            r = self.record
            g = grid_cells(r.n_layer, r.n_head, r.num_tokens)
            self._grid = np.stack([pool_attention(r.layer(l), g) for l in range(r.n_layer)])
        return self._grid


class AttentionExplorer(View):
    def __init__(self, model: GPT | None = None, tokenizer: Tokenizer | dict | None = None,
                 prompt: str | np.ndarray | list[int] | None = None, trainer: Trainer | None = None,
                 snapshot_every: int | None = None, max_snapshots: int = 64,
                 max_tokens: int | None = None, row: int = 0, shadow: bool | None = None) -> None:
        """model (or the trainer's); tokenizer (or the trainer's data's; a dict as a checkpoint
        stores it); prompt: text or token ids (default: validation row `row` of the trainer's
        data). With a trainer, a snapshot every `snapshot_every` steps (default: about 100
        over max_steps), at most `max_snapshots` kept; at most `max_tokens` tokens probed
        (default: LIVE_TOKENS with a trainer, where every snapshot probes again; else the
        model's block_size, e.g. 1,024 for GPT-2). shadow: probe a copy of the model (default: with
        a trainer only, whose record of the last step must stay as it is)."""
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
        self.shadow = trainer is not None if shadow is None else bool(shadow)
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
        block = self.model.config.block_size
        default = LIVE_TOKENS if self.trainer is not None else block
        limit = min(block, self.max_tokens or default)
        note = ""
        if len(ids) > limit:
            note = f" (the last {limit} of {len(ids)} tokens)"
            ids = ids[-limit:]
        with self._lock:
            self.probe = AttentionProbe(self.model, ids, shadow=self.shadow)
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
        att = Snapshot(self.probe.record())
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
        att = Snapshot(self.probe.record())
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

    def _grid_cells(self):
        """g: each grid map's side in blocks (see grid_cells)."""
        return grid_cells(self.n_layer, self.n_head, len(self.probe.ids))

    def _make_grid(self):
        """Small multiples in one heatmap: head h of layer l is the g x g block at row l,
        column h, one empty (NaN) cell between blocks; one colour scale (0..1) for all. One
        trace, not n_layer x n_head subplots: 144 plotly axes take seconds to draw."""
        fig = go.Figure(go.Heatmap(z=[[0.0]], zmin=0, zmax=1, colorscale=COLORSCALE,
                                   showscale=False, hoverongaps=False,
                                   hovertemplate="p = %{z:.2f}<extra></extra>"))
        fig.update_layout(margin=dict(l=40, r=10, t=40, b=30),
                          title=dict(text="all heads (click one to enlarge)", font_size=12),
                          xaxis=dict(side="top", showgrid=False, zeroline=False, tickmode="array"),
                          yaxis=dict(autorange="reversed", showgrid=False, zeroline=False,
                                     tickmode="array"),
                          plot_bgcolor="white",
                          shapes=[dict(type="rect", line=dict(color="#d62728", width=2))])
        fig = FigureWidget(fig, lock=self._lock)
        fig.data[0].on_click(self._on_grid_click)
        return fig

    def _layout_grid(self):
        """Size, L/H labels and the frame's scale, for the current prompt's g."""
        L, NH, g = self.n_layer, self.n_head, self._grid_cells()
        cell = max(40, min(130, 780 // NH))              # pixels per head
        centres = [i * (g + 1) + (g - 1) / 2 for i in range(max(L, NH))]
        with self.grid.batch_update():
            self.grid.layout.update(width=NH * cell + 60, height=L * cell + 80)
            self.grid.layout.xaxis.update(tickvals=centres[:NH],
                                          ticktext=[f"H{h}" for h in range(NH)])
            self.grid.layout.yaxis.update(tickvals=centres[:L],
                                          ticktext=[f"L{l}" for l in range(L)])

    def _make_selected(self):
        fig = FigureWidget(go.Heatmap(z=[[0.0]], zmin=0, zmax=1, colorscale=COLORSCALE),
                           lock=self._lock)
        fig.update_layout(width=520, height=520, margin=dict(l=60, r=20, t=50, b=60),
                          xaxis=dict(title="key (looked at)", tickmode="array", tickangle=0,
                                     automargin=True),
                          yaxis=dict(title="query (looking)", tickmode="array",
                                     autorange="reversed", automargin=True))
        return fig

    def _relabel_axes(self):
        """Token labels on the enlarged map's axes (at most AXIS_LABELS, evenly spaced: they
        never overlap) and its hover text. Positions are numbers on the axes (repeated tokens
        would merge as categories); a pooled map's cells sit at their blocks' centres."""
        T, labels = len(self.labels), self.labels
        shown = label_positions(T, AXIS_LABELS)
        ticks = dict(tickvals=shown, ticktext=[labels[t] for t in shown])
        spacing = PLOT_PX * (shown[1] - shown[0]) / T if len(shown) > 1 else PLOT_PX
        widest = max(len(html.unescape(label)) for label in ticks["ticktext"])
        x_angle = 0 if widest * CHAR_PX <= spacing else -90
        edges = block_edges(T, SELECTED_CELLS)
        centres = (edges[:-1] + edges[1:] - 1) / 2
        if T <= HOVER_TEXT_TOKENS:
            hover = [[f"query {labels[t]} ({t}) → key {labels[s]} ({s})" for s in range(T)]
                     for t in range(T)]
            template = "%{text}<br>p = %{z:.3f}<extra></extra>"
        else:
            hover = None
            per = "" if T <= SELECTED_CELLS else " (blocks of tokens: mean over queries, sum over keys)"
            template = f"query ≈ %{{y:.0f}} → key ≈ %{{x:.0f}}{per}<br>p = %{{z:.3f}}<extra></extra>"
        self.status.value = f"probe prompt, {T} tokens{self._prompt_note}: {self._token_list()}"
        with self.selected.batch_update():
            self.selected.data[0].update(text=hover, hovertemplate=template,
                                         x=centres if T > SELECTED_CELLS else None,
                                         y=centres if T > SELECTED_CELLS else None)
            self.selected.layout.xaxis.update(ticks, tickangle=x_angle)
            self.selected.layout.yaxis.update(ticks)
        self._layout_grid()

    def _token_list(self):
        """The prompt's tokens as <code> labels; past STATUS_TOKENS, its start and end."""
        code = [f"<code>{label}</code>" for label in self.labels]
        if len(code) > STATUS_TOKENS:
            head, tail = STATUS_TOKENS * 3 // 4, STATUS_TOKENS // 4
            code = [*code[:head], f"… ({len(code) - head - tail} more) …", *code[-tail:]]
        return " ".join(code) + " "

    # ------------------------------------------------------------------ drawing
    @property
    def snapshot_index(self):
        return self.step_slider.value

    def _snapshot(self, index=None):
        return self.history.values[self.snapshot_index if index is None else index]

    def attention(self, index=None):
        """The (n_layer, n_head, T, T) maps of snapshot `index` (default: the one shown),
        computed afresh: n_layer * n_head * T^2 floats (600 MB for GPT-2 small at T=1024)."""
        return self._snapshot(index).record.all()

    def head_attention(self, layer=None, head=None, index=None):
        """(T, T): one head's map of snapshot `index` (default: the selected head, shown)."""
        layer = self.layer.value if layer is None else layer
        head = self.head.value if head is None else head
        return self._snapshot(index).record.head(layer, head)

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
        if self._quiet:
            return
        with self._lock:
            self._draw_selected()

    def _on_grid_click(self, trace, points, selector):
        if not points.xs:
            return
        g = self._grid_cells()
        column, row = int(round(points.xs[0])), int(round(points.ys[0]))
        if column % (g + 1) == g or row % (g + 1) == g:    # the gap between two heads
            return
        with self._lock:
            self._quiet = True           # both sliders move: draw once, not twice
            try:
                self.layer.value, self.head.value = row // (g + 1), column // (g + 1)
            finally:
                self._quiet = False
            self._draw_selected()

    def _draw(self):
        """The grid of every head and the enlarged one, from the snapshot the step slider
        selects."""
        pooled = self._snapshot().grid()                  # (L, NH, g, g)
        L, NH, g = pooled.shape[0], pooled.shape[1], pooled.shape[2]
        z = np.full((L, g + 1, NH, g + 1), np.nan, np.float32)
        z[:, :g, :, :g] = pooled.transpose(0, 2, 1, 3)
        with self.grid.batch_update():
            self.grid.data[0].z = for_browser(z.reshape(L * (g + 1), NH * (g + 1))[:-1, :-1],
                                              GRID_DECIMALS)
        self._draw_selected()
        self._throttle.mark(self._viewed_step)

    def grid_map(self, layer, head):
        """(g, g): what the grid shows for `layer`, `head` (read back from the figure)."""
        g = self._grid_cells()
        z = np.asarray(self.grid.data[0].z, dtype=np.float64)
        return z[layer * (g + 1):layer * (g + 1) + g, head * (g + 1):head * (g + 1) + g]

    def _draw_selected(self):
        l, h = self.layer.value, self.head.value
        g = self._grid_cells()
        z = pool_attention(self.head_attention(l, h), SELECTED_CELLS)
        T = len(self.probe.ids)
        note = "" if T <= SELECTED_CELLS else f" · {T} tokens as {z.shape[0]} blocks"
        with self.selected.batch_update():
            self.selected.data[0].z = for_browser(z, SELECTED_DECIMALS)
            self.selected.layout.title = (f"layer {l}, head {h} · training step "
                                          f"{self._viewed_step}{note}")
        with self.grid.batch_update():
            self.grid.layout.shapes[0].update(x0=h * (g + 1) - 0.5, x1=h * (g + 1) + g - 0.5,
                                              y0=l * (g + 1) - 0.5, y1=l * (g + 1) + g - 0.5)

    # ------------------------------------------------------------------ static output
    def figures(self):
        """The enlarged map, then the grid of every head."""
        return [self.selected, self.grid]

    def summary(self):
        return (f"Attention explorer: {self.n_layer} layers x {self.n_head} heads on a "
                f"{len(self.labels)}-token probe prompt, {len(self.history)} snapshots up to "
                f"training step {self.history.steps[-1]}")

    def static_html(self):
        """The enlarged map (pooled to at most STATIC_CELLS blocks) as an HTML table of shaded
        cells: what a saved notebook shows on GitHub or nbviewer, where widgets do not run."""
        l, h = self.layer.value, self.head.value
        z = pool_attention(self.head_attention(l, h), STATIC_CELLS)
        starts = block_edges(len(self.labels), STATIC_CELLS)[:-1]
        names = [self.labels[t] for t in starts]
        head = "".join(f"<th>{label}</th>" for label in names)
        rows = []
        for t, label in enumerate(names):
            cells = "".join(f'<td style="background:rgba(31,119,180,{p:.2f});width:14px"></td>'
                            for p in z[t])
            rows.append(f"<tr><th>{label}</th>{cells}</tr>")
        pooled = "" if len(names) == len(self.labels) else (
            f", {len(self.labels)} tokens pooled into {len(names)} blocks")
        return (f"<p>Attention, layer {l}, head {h}, training step {self._viewed_step}{pooled} "
                f"(run the notebook for the interactive explorer)</p>"
                f'<table style="border-collapse:collapse;font-size:10px"><tr><th></th>{head}</tr>'
                + "".join(rows) + "</table>")
