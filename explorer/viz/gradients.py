"""Gradient flow and training health: is every layer learning, and at a sane speed?

    GradientFlow(trainer)        # records on the trainer's steps (explorer.train.stats.GradientRecorder)
    GradientFlow(recorder)       # a recorder you made (e.g. every=10 for a big model)
    GradientFlow(model)          # no trainer: after model.backward(), call view.record()

Four figures, each updated in place at most every `min_seconds` while training runs:
  * gradient norms: a parameter x step heatmap (log10 ||dL/dp||, rows grouped by layer) and one
    line per layer. A layer whose gradient is orders of magnitude below the others is hardly
    learning (vanishing gradients); one far above is about to blow up.
  * update-to-data ratio (log10) of every weight matrix, with the usual guide at -3: a step
    should change a weight by roughly a thousandth of its size.
  * histograms of activations and of |gradients| in one layer (pick it in the dropdown).
  * GELU saturation, layernorm input statistics, and the residual stream and its gradient.
Hover over anything for a one-sentence explanation.
"""
from __future__ import annotations

import html
import threading
from typing import TYPE_CHECKING

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

from ..train.stats import ACT_EDGES, GRAD_EXPONENTS, HIST_TENSORS, GradientRecorder, log2_edges_as_log10
from ._figure import FigureWidget
from ._throttle import Throttle
from .view import LIVE_HINT, View, plain_text

if TYPE_CHECKING:
    from ..model.gpt import GPT
    from ..train.runner import BackgroundTrainer
    from ..train.trainer import Trainer

GUIDE = -3.0     # log10 of the usual healthy update-to-data ratio
HIST_NAMES = {"residual2": "block output (residual stream)", "attn.out": "attention output",
              "mlp.fc": "GELU input (mlp.fc)", "mlp.gelu": "GELU output"}

EXPLAIN = {
    "norm_map": "How hard the loss pulls on this parameter: the L2 norm of d loss / d parameter "
                "(before clipping), on a log10 scale.",
    "norm_line": "The norm of the gradient of all this layer's parameters together; a layer far "
                 "below the others gets almost no learning signal.",
    "ratio": "How much this step changed the weights, relative to their size; about -3 (a "
             "thousandth) is healthy, far below learns slowly, far above is unstable.",
    "act_hist": "Share of this tensor's values in the bin (values beyond the axis are counted "
                "in the end bins).",
    "grad_hist": "Share of this tensor's gradients whose size lies in the bin (each bin is a "
                 "factor of 2; exact zeros are counted in the first).",
    "saturated": "Share of GELU inputs with |x| > 3, where GELU is flat or plain linear and "
                 "adds no non-linearity.",
    "dead": "Share of GELU inputs below -3: the output is about 0 and almost no gradient "
            "flows back through them.",
    "ln": "Average std of the vectors entering this layernorm (it divides them by it); "
          "the |mean| it subtracts is in brackets.",
    "res": "Std of the residual stream after this block: each block adds its output to it.",
    "res_grad": "Std of d loss / d residual stream here: the gradient signal that reaches this "
                "depth on its way back.",
}


def _hover(explain, value):
    """A hovertemplate: trace name, step and value, then the one-sentence explanation."""
    return (f"<b>%{{fullData.name}}</b>, step %{{x}}<br>{value}<br>"
            f"<i>{html.escape(explain)}</i><extra></extra>")


def _palette(n):
    return sample_colorscale("Viridis", [i / max(n - 1, 1) * 0.9 for i in range(n)])


def _log10(x):
    """log10 of x, NaN (a gap in a plot) where x <= 0: e.g. the update ratio of a step at lr 0."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x > 0, np.log10(np.where(x > 0, x, 1.0)), np.nan)


class GradientFlow(View):
    def __init__(self, source: Trainer | BackgroundTrainer | GradientRecorder | GPT, every: int = 1,
                 max_steps_kept: int = 256, hist_every: int = 10, min_seconds: float = 0.5) -> None:
        """source: a Trainer (or BackgroundTrainer) to record on each step; a GradientRecorder
        (shared: closing the view leaves it recording); or a GPT model (call record() after
        its backward). every, max_steps_kept, hist_every: the recorder's, when the view makes it.
        min_seconds: the least time between two redraws while training runs."""
        super().__init__()
        if isinstance(source, GradientRecorder):
            self.recorder, self._owns_recorder = source, False
        else:
            if hasattr(source, "trainer") and hasattr(source, "pause"):
                source = source.trainer      # a BackgroundTrainer: listen to its trainer
            self.recorder = GradientRecorder(source, every=every, max_steps_kept=max_steps_kept,
                                             hist_every=hist_every)
            self._owns_recorder = True
        self.trainer, self.model = self.recorder.trainer, self.recorder.model
        self.n_layer = self.model.config.n_layer
        self._throttle = Throttle(min_steps=1, min_seconds=min_seconds)
        self._lock = threading.RLock()       # the training thread and the UI both draw
        self._build()
        self._subscribe(self.recorder, "record", self._on_record)
        if self._owns_recorder:
            self._on_detach(self.recorder.close)     # nobody else reads it: stop recording
        if self.trainer is not None:
            self._subscribe(self.trainer, "run_end", self._on_run_end)
        self.refresh()

    # ------------------------------------------------------------------ figures
    def _build(self):
        rec = self.recorder
        # heatmap rows and ratio lines grouped by layer (the flat buffer's order interleaves
        # the layers: ln1.weight of every layer, then ln1.bias of every layer, ...)
        rank = {g: k for k, g in enumerate(rec.group_names())}
        self.row_order = sorted(range(len(rec.param_names)), key=lambda i: (rank[rec.param_groups[i]], i))
        self.param_labels = [html.escape(n) for n in rec.param_names]
        self.groups = rec.group_names()
        self._build_norms()
        self._build_ratio()
        self._build_hist()
        self._build_health()
        self.layer = widgets.Dropdown(options=[(f"layer {l}", l) for l in range(self.n_layer)], value=0,
                                      description="layer", layout=widgets.Layout(width="180px"))
        self.layer.observe(lambda change: self._draw_histograms(), names="value")
        self.status = widgets.HTML()
        self.widget = widgets.VBox([
            self.status, self.norms, self.ratio,
            widgets.HBox([widgets.HTML("<b>Histograms</b> (latest recorded step)"), self.layer]),
            self.hist, self.health])

    def _build_norms(self):
        n_rows = len(self.row_order)
        heat_px, lines_px = int(np.clip(16 * n_rows, 250, 1200)), 260
        share = heat_px / (heat_px + lines_px)
        self.norms = FigureWidget(make_subplots(
            rows=2, cols=1, row_heights=[share, 1 - share], vertical_spacing=80 / (heat_px + lines_px),
            subplot_titles=("gradient norm of each parameter (log10)", "gradient norm per layer")),
            lock=self._lock)
        self.norms.add_trace(go.Heatmap(
            x=[], y=[self.param_labels[i] for i in self.row_order], z=[], colorscale="Viridis",
            name="log10 |grad|", colorbar=dict(title="log10", len=share, y=1, yanchor="top"),
            hovertemplate=f"<b>%{{y}}</b>, step %{{x}}<br>log10 |grad| = %{{z:.2f}}<br>"
                          f"<i>{html.escape(EXPLAIN['norm_map'])}</i><extra></extra>"), row=1, col=1)
        for group, color in zip(self.groups, _palette(len(self.groups))):
            self.norms.add_trace(go.Scatter(x=[], y=[], mode="lines", name=html.escape(group),
                                            line=dict(color=color),
                                            hovertemplate=_hover(EXPLAIN["norm_line"], "|grad| = %{y:.3g}")),
                                 row=2, col=1)
        # embedding at the top; every row labelled while the labels fit
        self.norms.update_yaxes(autorange="reversed", row=1, col=1,
                                **(dict(dtick=1) if n_rows <= 75 else {}))
        self.norms.update_yaxes(type="log", row=2, col=1)
        self.norms.update_xaxes(title_text="step", row=2, col=1)
        self.norms.update_layout(height=heat_px + lines_px + 120, margin=dict(l=10, r=10, t=40, b=10),
                                 legend=dict(y=1 - share - 0.05, yanchor="top"))

    def _build_ratio(self):
        # the weight matrices only: biases and gains are many, and their ratios say little
        shapes = self.model.param_shapes
        self.ratio_params = [i for i in self.row_order if len(shapes[i][1]) == 2]
        self.ratio = FigureWidget(lock=self._lock)
        for i, color in zip(self.ratio_params, _palette(len(self.ratio_params))):
            self.ratio.add_trace(go.Scatter(x=[], y=[], mode="lines", name=self.param_labels[i],
                                            line=dict(color=color),
                                            hovertemplate=_hover(EXPLAIN["ratio"], "log10 ratio = %{y:.2f}")))
        self.ratio.add_hline(y=GUIDE, line_dash="dash", line_color="gray",
                             annotation_text="1e-3: the usual healthy size", annotation_position="top left")
        self.ratio.update_layout(title="update-to-data ratio: log10(|step change| / |weights|)",
                                 xaxis_title="step", yaxis_title="log10 ratio", height=380,
                                 margin=dict(l=10, r=10, t=40, b=10))

    def _build_hist(self):
        self.hist = FigureWidget(make_subplots(rows=1, cols=2, subplot_titles=(
            "activation values", "|gradient| (log10; bins of a factor 2)")), lock=self._lock)
        g_edges = log2_edges_as_log10(GRAD_EXPONENTS)
        colors = _palette(len(HIST_TENSORS))
        for col, (edges, key) in enumerate(((ACT_EDGES, "act_hist"), (g_edges, "grad_hist")), start=1):
            centers = (edges[:-1] + edges[1:]) / 2
            for t, color in zip(HIST_TENSORS, colors):
                self.hist.add_trace(go.Scatter(
                    x=centers, y=np.zeros(len(centers)), mode="lines", line_shape="hvh",
                    name=html.escape(HIST_NAMES[t]), legendgroup=t, showlegend=col == 1,
                    line=dict(color=color), customdata=np.stack([edges[:-1], edges[1:]], axis=1),
                    hovertemplate=f"<b>%{{fullData.name}}</b><br>bin [%{{customdata[0]:.2f}}, "
                                  f"%{{customdata[1]:.2f}}): %{{y:.1%}}<br>"
                                  f"<i>{html.escape(EXPLAIN[key])}</i><extra></extra>"), row=1, col=col)
        self.hist.update_yaxes(tickformat=".0%")
        self.hist.update_layout(height=360, margin=dict(l=10, r=10, t=80, b=10), title_y=0.97)

    def _build_health(self):
        L = self.n_layer
        self.health = FigureWidget(make_subplots(rows=2, cols=2, vertical_spacing=0.14, subplot_titles=(
            "GELU: saturated (solid), dead (dotted)", "layernorm input std",
            "residual stream std", "residual stream gradient std")), lock=self._lock)
        layer_colors = _palette(L + 1)

        def line(name, group, explain, value, color, dash="solid", row=1, col=1):
            self.health.add_trace(go.Scatter(
                x=[], y=[], mode="lines", name=html.escape(name), line=dict(color=color, dash=dash),
                legendgroup=group, legendgrouptitle_text=group, hovertemplate=_hover(explain, value)),
                row=row, col=col)
        for l in range(L):
            for kind, dash in (("saturated", "solid"), ("dead", "dot")):
                line(f"layer {l} {kind}", "GELU", EXPLAIN[kind], "%{y:.2%}", layer_colors[l], dash)
        for name, color in zip(self.recorder.ln_names, _palette(len(self.recorder.ln_names))):
            line(name, "layernorm", EXPLAIN["ln"], "std %{y:.3g} (|mean| %{customdata:.2g})", color, col=2)
        stream = ["embedding"] + [f"after block {l}" for l in range(L)]
        for (row, col), key, group in (((2, 1), "res", "residual"), ((2, 2), "res_grad", "residual gradient")):
            for name, color in zip(stream, layer_colors):
                line(name, group, EXPLAIN[key], "std %{y:.3g}", color, row=row, col=col)
        # shares are often well under 1%: ticks at ".0%" would all read "0%"
        self.health.update_yaxes(tickformat=".2~%", rangemode="tozero", row=1, col=1)
        self.health.update_yaxes(type="log", row=2, col=2)
        self.health.update_layout(height=600, margin=dict(l=10, r=10, t=40, b=10),
                                  legend=dict(groupclick="toggleitem", font_size=10))

    # ------------------------------------------------------------------ updates
    def record(self):
        """Without a trainer: record the model's last forward/backward now and show it."""
        self.recorder.record()
        self.refresh()

    def _on_record(self, recorder):
        """Runs on the training thread after each record: redraw, throttled."""
        steps = recorder.series_history.steps
        if steps and self._throttle.due(steps[-1]):
            self.refresh()

    def _on_run_end(self, payload):
        self.recorder.catch_up_histograms()      # show the last step's histograms
        self.refresh()
        self.sync_figures()   # a page reload shows the last state, not the empty figures

    def refresh(self):
        """Redraw everything from the recorder (in place)."""
        with self._lock:
            steps, data = self.recorder.snapshot()
            if steps:
                self._throttle.mark(steps[-1])
            steps = np.asarray(steps)           # arrays pass plotly's validation faster than lists
            self._draw_norms(steps, data)
            self._draw_ratio(steps, data)
            self._draw_health(steps, data)
            self._draw_histograms()
            self._draw_status(steps)

    def _draw_norms(self, steps, data):
        g = data["grad_norm"]
        layers = self.recorder.layer_grad_norms(g) if len(steps) else {k: [] for k in self.groups}
        with self.norms.batch_update():
            self.norms.data[0].x = steps
            self.norms.data[0].z = _log10(g[:, self.row_order].T) if len(steps) else []
            for trace, group in zip(self.norms.data[1:], self.groups):
                trace.x, trace.y = steps, layers[group]

    def _draw_ratio(self, steps, data):
        r = _log10(data["update_ratio"])
        with self.ratio.batch_update():
            for trace, i in zip(self.ratio.data, self.ratio_params):
                trace.x, trace.y = steps, (r[:, i] if len(steps) else [])

    def _draw_health(self, steps, data):
        columns = []
        for l in range(self.n_layer):
            columns += [(data["gelu_saturated"], l, None), (data["gelu_dead"], l, None)]
        columns += [(data["ln_std"], i, data["ln_mean_abs"]) for i in range(len(self.recorder.ln_names))]
        columns += [(data["residual_std"], i, None) for i in range(self.n_layer + 1)]
        columns += [(data["residual_grad_std"], i, None) for i in range(self.n_layer + 1)]
        with self.health.batch_update():
            for trace, (values, i, extra) in zip(self.health.data, columns):
                trace.x, trace.y = steps, (values[:, i] if len(steps) else [])
                if extra is not None:
                    trace.customdata = extra[:, i] if len(steps) else []

    def _draw_histograms(self):
        """The latest histograms of the selected layer, as shares of all elements."""
        with self._lock:
            latest = self.recorder.latest_histograms()
            n, layer = len(HIST_TENSORS), self.layer.value
            with self.hist.batch_update():
                for k, t in enumerate(HIST_TENSORS):
                    for trace, which in ((self.hist.data[k], 1), (self.hist.data[n + k], 2)):
                        if latest is None:
                            trace.y = np.zeros(len(trace.x))
                            continue
                        counts = latest[which][t][layer].astype(np.float64)
                        trace.y = counts / max(counts.sum(), 1.0)
                where = f"layer {layer}, step {latest[0]}" if latest else "no step recorded yet"
                self.hist.layout.title = f"histograms of {where}"

    def _draw_status(self, steps):
        rec = self.recorder
        if not len(steps):
            hint = ("train a step" if self.trainer is not None
                    else "run model.forward(x, y) and model.backward(), then call .record()")
            self.status.value = f"<b>Gradient flow</b>: nothing recorded yet ({hint})."
            return
        self.status.value = (f"<b>Gradient flow</b>: {len(steps)} recorded steps, {steps[0]} to "
                             f"{steps[-1]} (now every {rec.series_history.stride} step(s)); "
                             f"histograms of step {rec.hist_history.steps[-1] if rec.hist_steps else '-'}.")

    # ------------------------------------------------------------------ display
    def figures(self):
        return [self.norms, self.ratio, self.hist, self.health]

    def summary(self):
        return plain_text(self.status.value)

    def static_html(self):
        """A table of the latest gradient norm and update ratio per parameter: what a saved
        notebook shows on GitHub or nbviewer, where widgets do not run."""
        steps, data = self.recorder.snapshot()
        if not steps:
            return f"<p><b>Gradient flow</b>: nothing recorded yet ({LIVE_HINT}).</p>"
        rows = "".join(
            f"<tr><td>{label}</td><td>{g:.3g}</td><td>{r:.2f}</td></tr>" if np.isfinite(r) else
            f"<tr><td>{label}</td><td>{g:.3g}</td><td>- (no change)</td></tr>"
            for label, g, r in zip(self.param_labels, data["grad_norm"][-1],
                                   _log10(data["update_ratio"][-1])))
        return (f"<p><b>Gradient flow at step {steps[-1]}</b> (static view: run the notebook for the "
                f"live figures)</p><table><tr><th>parameter</th><th>|grad|</th>"
                f"<th>log10 update/data</th></tr>{rows}</table>")

    def __repr__(self):
        return f"GradientFlow({self.recorder!r})"
