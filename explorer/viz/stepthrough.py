"""Step through one training step, op by op, as the model ran it.

    StepThrough(model)                 # the model's last forward and backward (model.trace)
    StepThrough(trainer=trainer)       # ... plus the AdamW update; re-captured after each run

The list holds every forward op, then every backward op (in the order backward ran them: from
the loss back to the embedding), then the update. Select one (or walk with Next / Previous) to
see each of its output and input tensors: a heatmap of a 2-D slice (the first batch row, and
the first head of attention maps) with the full tensor's shape, mean, std, min and max. A
backward op names the forward op it inverts; "Go to" jumps there.

The model overwrites its buffers on the next step, so the view shows a *capture*: statistics
and displayed slices taken at capture time (and full copies for small models, in .ops).
"""
from __future__ import annotations

import html
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ._figure import FigureWidget, for_browser
from .view import View, plain_text

if TYPE_CHECKING:
    from ..model.gpt import GPT
    from ..train.runner import BackgroundTrainer
    from ..train.trainer import Trainer

MAX_SIDE = 256          # a heatmap shows at most MAX_SIDE x MAX_SIDE values
PANELS = (2, 4)         # rows x columns of heatmaps: enough for every op (layernorm_backward: 8)
COPY_LIMIT = 64 << 20   # capture() keeps full copies of the tensors up to this many bytes


@dataclass
class TensorSnapshot:
    """One argument of an op at capture time."""
    role: str                    # "output", "input" or "derived" (computed here, for insight)
    arg: str                     # the kernel's argument name, e.g. "dinp"
    name: str                    # which buffer it is, e.g. "dL/d(blocks.0.mlp.fc)"
    shape: tuple = ()
    stats: dict | None = None    # mean, std, min, max of the whole tensor (None: not an array)
    slice2d: np.ndarray | None = None
    slice_label: str = ""
    value: object = None         # full copy (small models), or the scalar (e.g. n_head)


@dataclass
class OpSnapshot:
    index: int
    phase: str                   # "forward", "backward" or "update"
    name: str
    kernel: str
    inverts: str | None = None
    tensors: list = field(default_factory=list)
    note: str = ""

    @property
    def label(self):
        tag = {"forward": "F", "backward": "B", "update": "U"}[self.phase]
        return f"{self.index:3d} {tag}  {self.name}   [{self.kernel}]"


def tensor_stats(x):
    """mean, std, min, max of a whole array (float64 accumulation)."""
    return {"mean": float(np.mean(x, dtype=np.float64)), "std": float(np.std(x, dtype=np.float64)),
            "min": float(np.min(x)), "max": float(np.max(x))}


def display_slice(x, max_side=MAX_SIDE):
    """(2-D float array to draw, what it is) for an array of any rank: the first batch row of
    (B, T, C), the first batch row and head of (B, NH, T, T), long vectors wrapped into rows;
    at most max_side x max_side values (the leading block)."""
    x = np.asarray(x)
    label = ""
    if x.ndim == 0:
        x2 = x.reshape(1, 1)
    elif x.ndim == 1:
        if x.size > max_side:             # e.g. a flat parameter buffer: rows of max_side values
            rows = -(-x.size // max_side)
            x2 = np.full(rows * max_side, np.nan)
            x2[:x.size] = x
            x2 = x2.reshape(rows, max_side)
            label = f"as rows of {max_side}"
        else:
            x2 = x.reshape(1, -1)
    else:
        lead = x.ndim - 2
        x2 = x[(0,) * lead]
        label = {2: "", 3: "batch row 0", 4: "batch row 0, head 0"}.get(x.ndim, f"[{'0, ' * lead}:, :]")
    if x2.shape[0] > max_side or x2.shape[1] > max_side:
        rows, cols = min(x2.shape[0], max_side), min(x2.shape[1], max_side)
        label = (label + ", " if label else "") + f"first {rows} x {cols}"
        x2 = x2[:max_side, :max_side]
    # float32: what the model computes in; float64 would double what a capture holds
    return np.array(x2, dtype=np.float32), label


def _buffer_names(model, trainer):
    """id(array) -> readable name, for every buffer an op can touch."""
    names = {}
    buffers = ((False, model.params), (True, model.grads), (False, model.acts), (True, model.grad_acts))
    for is_grad, d in buffers:
        for key, arr in d.items():
            names[id(arr)] = f"dL/d({key})" if is_grad else key
    names[id(model.flat_params)] = "all parameters (flat buffer)"
    names[id(model.flat_grads)] = "all gradients (flat buffer)"
    if trainer is not None:
        names[id(trainer.m)] = "AdamW m: running mean of gradients"
        names[id(trainer.v)] = "AdamW v: running mean of squared gradients"
    return names


def _snapshot_tensor(role, arg, x, names, keep_copy, memo):
    """A TensorSnapshot; memo (id -> measurements) measures a buffer once per capture, though
    it is an output of one op and an input of the next."""
    name = names.get(id(x), arg)
    if not isinstance(x, np.ndarray):
        return TensorSnapshot(role, arg, name, value=x)
    if id(x) not in memo:
        memo[id(x)] = (tensor_stats(x), *display_slice(x), x.copy() if keep_copy else None)
    stats, slice2d, label, copy = memo[id(x)]
    return TensorSnapshot(role, arg, name, x.shape, stats, slice2d, label, copy)


def capture_trace(model, trainer=None, full=None):
    """[OpSnapshot] of the model's last forward/backward (and the trainer's last update).
    full=None keeps full copies when the tensors add up to at most COPY_LIMIT bytes."""
    names = _buffer_names(model, trainer)
    with model.lock:                      # nobody may overwrite the buffers while we read them
        trace = list(model.trace)
        arrays = {id(a): a for op in trace for a in (*op.outputs.values(), *op.inputs.values())
                  if isinstance(a, np.ndarray)}
        keep = full if full is not None else sum(a.nbytes for a in arrays.values()) <= COPY_LIMIT
        ops, memo = [], {}
        for i, op in enumerate(trace):
            tensors = [_snapshot_tensor("output", k, v, names, keep, memo) for k, v in op.outputs.items()]
            tensors += [_snapshot_tensor("input", k, v, names, keep, memo) for k, v in op.inputs.items()]
            ops.append(OpSnapshot(i, op.phase, op.name, op.kernel, op.inverts, tensors))
        if trainer is not None and trainer.history and any(op.phase == "backward" for op in trace):
            ops.append(_update_snapshot(len(ops), model, trainer, names, keep, memo))
    return ops


def _update_snapshot(index, model, trainer, names, keep, memo):
    """The AdamW step (one kernel call on the flat buffers), described, with its buffers after
    the update and the per-element step direction it took."""
    from ..kernels.clip import clip_scale
    last, cfg, t = trainer.history[-1], trainer.config, trainer.step_count
    scale = clip_scale(last["grad_norm"], cfg.grad_clip)
    note = (f"AdamW step t={t} on the flat buffers, lr {last['lr']:.3g}; the gradients g were scaled "
            f"by {scale:.3g} (global norm {last['grad_norm']:.3g}, clipped at {cfg.grad_clip}). "
            f"m = {cfg.beta1} m + {1 - cfg.beta1:.3g} g;  v = {cfg.beta2} v + {1 - cfg.beta2:.3g} g²;  "
            f"p -= lr·{cfg.weight_decay}·p (2-D weights only);  p -= lr · m̂ / (√v̂ + {cfg.eps:g}) with "
            f"m̂ = m / (1 - {cfg.beta1}^t), v̂ = v / (1 - {cfg.beta2}^t). Buffers shown after the update.")
    outputs = {"params": model.flat_params, "m": trainer.m, "v": trainer.v}
    tensors = [_snapshot_tensor("output", k, v, names, keep, memo) for k, v in outputs.items()]
    tensors.append(_snapshot_tensor("input", "grads", model.flat_grads, names, keep, memo))
    # what the step did to each element, in units of lr: about +-1 for every parameter, however
    # small its gradient (Adam's normalisation)
    m_hat = trainer.m / (1.0 - cfg.beta1 ** t)
    v_hat = trainer.v / (1.0 - cfg.beta2 ** t)
    direction = (m_hat / (np.sqrt(v_hat) + cfg.eps)).astype(np.float32)
    names = {**names, id(direction): "step direction m̂ / (√v̂ + eps): the update is -lr times this"}
    tensors.append(_snapshot_tensor("derived", "m̂/(√v̂+eps)", direction, names, keep, memo))
    return OpSnapshot(index, "update", "update", "adamw_update", None, tensors, note)


class StepThrough(View):
    def __init__(self, model: GPT | Trainer | BackgroundTrainer | None = None,
                 trainer: Trainer | None = None, follow: bool = True) -> None:
        """model: a GPT (its last forward/backward), or a Trainer or BackgroundTrainer (its
        model, and the update). follow: capture again after each of the trainer's runs."""
        super().__init__()
        if hasattr(model, "pause") and hasattr(model, "trainer"):
            model = model.trainer                    # a BackgroundTrainer
        if hasattr(model, "model") and hasattr(model, "on"):
            model, trainer = model.model, model      # StepThrough(trainer)
        if model is None and trainer is not None:
            model = trainer.model
        if model is None or not hasattr(model, "trace"):
            raise TypeError(f"StepThrough needs a GPT model or a Trainer, got {type(model).__name__}")
        self.model, self.trainer = model, trainer
        self.ops = []
        self._lock = threading.RLock()               # run_end captures on the training thread
        self._build()
        if trainer is not None and follow:
            self._subscribe(trainer, "run_end", self._on_run_end)  # a BackgroundTrainer's Step is a run(1)
        self.capture()

    # ------------------------------------------------------------------ widgets
    def _build(self):
        self.select = widgets.Select(options=[], rows=24, layout=widgets.Layout(width="500px"))
        self.select.observe(lambda change: self._draw(), names="value")
        self.prev_button = widgets.Button(description="◀ Previous", layout=widgets.Layout(width="105px"))
        self.next_button = widgets.Button(description="Next ▶", layout=widgets.Layout(width="105px"))
        self.jump_button = widgets.Button(description="Go to forward op", disabled=True,
                                          layout=widgets.Layout(width="200px"))
        self.capture_button = widgets.Button(description="Capture the last step",
                                             tooltip="copy the model's record of its last step",
                                             layout=widgets.Layout(width="200px"))
        self.prev_button.on_click(lambda _: self.move(-1))
        self.next_button.on_click(lambda _: self.move(+1))
        self.jump_button.on_click(lambda _: self.jump_to_inverted())
        self.capture_button.on_click(lambda _: self.capture())
        self.header, self.info, self.table = widgets.HTML(), widgets.HTML(), widgets.HTML()
        rows, cols = PANELS
        self.fig = FigureWidget(make_subplots(rows=rows, cols=cols, horizontal_spacing=0.06,
                                              vertical_spacing=0.16, subplot_titles=[" "] * (rows * cols)),
                                lock=self._lock)
        for k in range(rows * cols):
            self.fig.add_trace(go.Heatmap(z=None, colorscale="RdBu", reversescale=True, zmid=0,
                                          showscale=False, hovertemplate="row %{y}, col %{x}: %{z:.4g}"
                                                                         "<extra>%{fullData.name}</extra>"),
                               row=k // cols + 1, col=k % cols + 1)
        self.fig.update_yaxes(autorange="reversed")
        # white background: the panels an op does not use disappear with their axes
        self.fig.update_layout(height=520, margin=dict(l=10, r=10, t=40, b=10), template="plotly_white")
        self.fig.update_annotations(font_size=11)
        controls = widgets.VBox([self.select, widgets.HBox([self.prev_button, self.next_button]),
                                 self.jump_button, self.capture_button])
        self.widget = widgets.VBox([self.header, widgets.HBox([controls, widgets.VBox(
            [self.info, self.table], layout=widgets.Layout(width="100%"))]), self.fig])

    # ------------------------------------------------------------------ capture and navigation
    def capture(self, full=None):
        """Copy the model's record of its last step (see capture_trace) and show it."""
        ops = capture_trace(self.model, self.trainer, full)
        with self._lock:
            old = self.select.value
            self.ops = ops
            self.select.options = [(op.label, op.index) for op in ops]
            value = old if old is not None and old < len(ops) else (0 if ops else None)
            if self.select.value == value:
                self._draw()
            else:
                self.select.value = value            # draws through the observer
            self._draw_header()
        return ops

    def _on_run_end(self, payload):
        self.capture()
        self.sync_figures()

    @property
    def op_names(self):
        return [op.name for op in self.ops]

    @property
    def selected(self):
        """The OpSnapshot on show (None when nothing was captured)."""
        v, ops = self.select.value, self.ops
        return ops[v] if v is not None and v < len(ops) else None

    def move(self, delta):
        """Select the op `delta` places further (Next: +1, Previous: -1), stopping at the ends."""
        if self.ops:
            current = self.select.value or 0
            self.select.value = int(np.clip(current + delta, 0, len(self.ops) - 1))

    def jump_to_inverted(self):
        """From a backward op, select the forward op it computes the gradient of."""
        target = self._inverted_index(self.selected)
        if target is not None:
            self.select.value = target

    def _inverted_index(self, op):
        if op is None or not op.inverts:
            return None
        return next((o.index for o in self.ops if o.phase == "forward" and o.name == op.inverts), None)

    # ------------------------------------------------------------------ drawing
    def _draw_header(self):
        n = {p: sum(op.phase == p for op in self.ops) for p in ("forward", "backward", "update")}
        where = f" after step {self.trainer.step_count}" if self.trainer is not None else ""
        if not self.ops:
            text = ("the model has not run yet: train a step (or call model.forward(x, y) and "
                    "model.backward()), then press Capture.")
        elif not n["backward"]:
            text = (f"{n['forward']} forward ops{where}, but no backward: the last pass was an "
                    f"evaluation or a prompt. Train a step, then press Capture, to see a whole step.")
        else:
            text = (f"{n['forward']} forward ops, {n['backward']} backward ops"
                    f"{' and the update' if n['update'] else ''}{where}.")
        self.header.value = f"<b>One training step</b>: {html.escape(text)}"

    def _draw(self):
        with self._lock:
            self._draw_selected()

    def _draw_selected(self):
        op = self.selected
        self.prev_button.disabled = op is None or op.index == 0
        self.next_button.disabled = op is None or op.index == len(self.ops) - 1
        target = self._inverted_index(op)
        self.jump_button.disabled = target is None
        self.jump_button.description = f"Go to {op.inverts}" if target is not None else "Go to forward op"
        self.info.value = self._info_html(op, target)
        self.table.value = self._table_html(op)
        self._draw_heatmaps(op)

    def _info_html(self, op, target):
        if op is None:
            return ""
        text = (f"<b>{html.escape(op.name)}</b> — {op.phase} op #{op.index}, "
                f"kernel <code>{html.escape(op.kernel)}</code>")
        if op.inverts:
            where = f"forward op #{target}" if target is not None else "not in this trace"
            text += (f"<br>computes the gradient of the forward op <b>{html.escape(op.inverts)}</b> "
                     f"({where}): from d loss / d its outputs to d loss / d its inputs.")
        if op.note:
            text += f"<br>{html.escape(op.note)}"
        return text

    def _table_html(self, op):
        if op is None:
            return ""
        rows, columns = [], ("mean", "std", "min", "max")
        for t in op.tensors:
            if t.stats is None:
                cells = f"<td colspan=5>{html.escape(repr(t.value))}</td>"
            else:
                s = t.stats
                cells = f"<td>{t.shape}</td>" + "".join(f"<td>{s[k]:.4g}</td>" for k in columns)
            rows.append(f"<tr><td>{t.role}</td><td><code>{html.escape(t.arg)}</code></td>"
                        f"<td>{html.escape(t.name)}</td>{cells}</tr>")
        head = "".join(f"<th>{h}</th>" for h in ("", "argument", "tensor", "shape", *columns))
        return f'<table style="white-space: nowrap; font-size: 90%"><tr>{head}</tr>{"".join(rows)}</table>'

    def _draw_heatmaps(self, op):
        shown = [t for t in (op.tensors if op else []) if t.slice2d is not None]
        with self.fig.batch_update():
            for k, trace in enumerate(self.fig.data):
                t = shown[k] if k < len(shown) else None
                trace.z = for_browser(t.slice2d) if t else None   # 4 significant digits
                trace.name = html.escape(f"{t.arg} {t.slice_label}") if t else ""
                self.fig.layout.annotations[k].text = self._panel_title(t)
                suffix = str(k + 1) if k else ""       # the panel's axes: xaxis, xaxis2, ...
                self.fig.layout["xaxis" + suffix].visible = t is not None
                self.fig.layout["yaxis" + suffix].visible = t is not None
                # a single row (a vector) has no row numbers worth showing
                self.fig.layout["yaxis" + suffix].showticklabels = t is not None and t.slice2d.shape[0] > 1

    @staticmethod
    def _panel_title(t):
        if t is None:
            return " "
        role = {"output": "out", "input": "in"}.get(t.role, t.role)
        title = html.escape(f"{role}: {t.arg} {t.shape}")
        return title + (f"<br>{html.escape(t.slice_label)}" if t.slice_label else "")

    # ------------------------------------------------------------------ display
    def figures(self):
        return [self.fig]

    def summary(self):
        return plain_text(self.header.value)

    def static_html(self):
        """The op list as a table: what a saved notebook shows where widgets do not run."""
        rows = "".join(f"<tr><td>{op.index}</td><td>{op.phase}</td><td>{html.escape(op.name)}</td>"
                       f"<td>{html.escape(op.kernel)}</td><td>{html.escape(op.inverts or '')}</td></tr>"
                       for op in self.ops)
        return (f"<p>{self.header.value} (static view: run the notebook to inspect the tensors)</p>"
                f"<table><tr><th>#</th><th>phase</th><th>op</th><th>kernel</th><th>inverts</th></tr>"
                f"{rows}</table>")

    def __repr__(self):
        return f"StepThrough({len(self.ops)} ops of {self.model!r})"
