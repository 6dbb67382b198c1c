"""The training dashboard: Run / Pause / Step / Reset, live loss curves and a sample.

    from explorer.viz import TrainingDashboard
    dash = TrainingDashboard(trainer)     # or a BackgroundTrainer
    dash                                  # last line of a cell: shows it

Training runs on a BackgroundTrainer's thread, so the buttons (and other cells) answer while
it trains; the buttons only set flags. The dashboard listens to the trainer's events: on a
step it redraws only when at least `plot_every` steps and `min_interval_s` seconds have
passed since the last redraw (a redraw costs a few milliseconds; every step would cost more
than a tiny model's step), and once more when training stops. Curves show at most
`max_points` points (a uniform stride over the history), so a long run keeps the browser's
memory flat.

Closing it (dash.close()) stops its redraws and removes it from the page; training goes on if
it runs: dash.runner.pause() stops it, dash.runner.close() ends its thread.
"""
from __future__ import annotations

import html
import math
import statistics
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from ..train.runner import BackgroundTrainer
from ._decimate import MAX_POINTS, decimate
from ._throttle import Throttle
from .view import View, plain_text

if TYPE_CHECKING:
    from ..train.trainer import Trainer

LOSS_COLOR, VAL_COLOR, ACC_COLOR, SPEED_COLOR = "#1f77b4", "#ff7f0e", "#2ca02c", "#7f7f7f"
# trainer -> its live dashboard: a cell run again replaces the old one instead of adding a
# second set of redraws to every step
_LIVE = weakref.WeakKeyDictionary()


class TrainingDashboard(View):
    def __init__(self, trainer_or_runner: Trainer | BackgroundTrainer, sample_every_s: float = 10.0,
                 plot_every: int = 1, min_interval_s: float = 0.25, max_points: int = MAX_POINTS,
                 sample_prompt: str | None = None, sample_tokens: int = 80, steps: int = 0,
                 plot_budget: float = 0.02, sample_budget: float = 0.01,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """trainer_or_runner: a Trainer (the dashboard drives its BackgroundTrainer.of(trainer),
        shared with any other view of it) or a BackgroundTrainer. sample_every_s: seconds between two
        generated samples during training (0: only when training stops). steps: the value
        the "steps" box starts with (0: up to the trainer's max_steps, then until paused).
        plot_budget, sample_budget: the largest fraction of training time that redraws and
        samples may take; slow ones are spaced out further (see _throttle.Throttle)."""
        import ipywidgets as W

        super().__init__()
        if isinstance(trainer_or_runner, BackgroundTrainer):
            self.runner = trainer_or_runner
        else:
            self.runner = BackgroundTrainer.of(trainer_or_runner)
        self.trainer = self.runner.trainer
        self.max_points = max_points
        self.sample_every_s, self.sample_prompt, self.sample_tokens = (
            sample_every_s, sample_prompt, sample_tokens)
        self._clock = clock
        self._plot_throttle = Throttle(plot_every, min_interval_s, plot_budget, clock)
        self._sample_throttle = Throttle(1, sample_every_s, sample_budget, clock)
        self._sample_step = None         # the step the sample shown was made at
        self._lock = threading.RLock()   # redraws come from the training thread and from ours
        self.plot_updates = 0            # how many times the figure was redrawn
        self.has_accuracy = hasattr(self.trainer.data, "evaluate")

        self.figure = self._make_figure()
        self.buttons = {name: W.Button(description=name, icon=icon, tooltip=tip,
                                       layout=W.Layout(width="88px"))
                        for name, icon, tip in [
                            ("Run", "play", "train in the background (the steps box: how many)"),
                            ("Pause", "pause", "stop after the step in progress"),
                            ("Step", "step-forward", "take exactly one training step"),
                            ("Reset", "undo", "fresh weights, optimizer state and history")]}
        self.steps = W.BoundedIntText(value=steps, min=0, max=10**9, description="steps",
                                      tooltip="0: up to max_steps of the schedule, then until Pause",
                                      layout=W.Layout(width="170px"))
        lr = self.trainer.config.lr
        self.lr = W.FloatLogSlider(value=lr, base=10, min=math.floor(math.log10(lr)) - 2,
                                   max=math.ceil(math.log10(lr)) + 1, step=0.1,
                                   description="peak lr", readout_format=".1e",
                                   continuous_update=False)
        self.status = W.HTML()
        self.error = W.HTML()
        self.sample = W.HTML()
        self.widget = W.VBox([
            W.HBox([*self.buttons.values(), self.steps, self.lr]),
            self.status, self.error, self.figure, self.sample])

        self.buttons["Run"].on_click(self._on_run_clicked)
        self.buttons["Pause"].on_click(lambda _: self.runner.pause())
        self.buttons["Step"].on_click(self._on_step_clicked)
        self.buttons["Reset"].on_click(lambda _: self.runner.reset(wait=False))
        self.lr.observe(self._on_lr_changed, names="value")
        for source, event, callback in [
                (self.trainer, "step", self._on_step), (self.trainer, "eval", self._on_eval),
                (self.runner, "state", self._on_state), (self.runner, "error", self._on_error),
                (self.runner, "reset", self._on_reset)]:
            self._subscribe(source, event, callback)
        self.refresh()
        self._refresh_sample()
        self._show_state(self.runner.state)
        previous = _LIVE.get(self.trainer)
        if previous is not None:
            previous.detach()        # its output stays on the page, saying why it stopped
            previous.status.value += " &middot; <i>replaced by a newer dashboard</i>"
        _LIVE[self.trainer] = self
        self._on_detach(_forget, self)

    # ----------------------------------------------------------------- the figure
    def _make_figure(self):
        from plotly.subplots import make_subplots

        from ._figure import FigureWidget

        top = {"secondary_y": True} if self.has_accuracy else {}
        fig = FigureWidget(make_subplots(
            rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08, row_heights=[0.72, 0.28],
            specs=[[top], [{}]]), lock=self._lock)
        line = "step %{x}<br>%{fullData.name} %{y:.4f}<extra></extra>"
        fig.add_scatter(name="train loss", mode="lines", line_color=LOSS_COLOR,
                        hovertemplate=line, row=1, col=1)
        fig.add_scatter(name="val loss", mode="lines+markers", line_color=VAL_COLOR,
                        hovertemplate=line, row=1, col=1)
        if self.has_accuracy:
            fig.add_scatter(name="accuracy", mode="lines+markers", line_color=ACC_COLOR,
                            hovertemplate="step %{x}<br>exact-match accuracy %{y:.1%}<extra></extra>",
                            row=1, col=1, secondary_y=True)
            fig.update_yaxes(title_text="accuracy", range=[0, 1.04], tickformat=".0%",
                             tickmode="array", tickvals=[0, 0.25, 0.5, 0.75, 1.0],
                             showgrid=False, row=1, col=1, secondary_y=True)
        fig.add_scatter(name="tokens/s", mode="lines", line_color=SPEED_COLOR, showlegend=False,
                        hovertemplate="step %{x}<br>%{y:,.0f} tokens/s<extra></extra>", row=2, col=1)
        fig.update_yaxes(title_text="loss", row=1, col=1, secondary_y=False)
        fig.update_yaxes(title_text="tokens/s", rangemode="tozero", row=2, col=1)
        fig.update_xaxes(title_text="step", row=2, col=1)
        fig.update_layout(height=460, margin=dict(l=60, r=60, t=30, b=40), uirevision="keep",
                          legend=dict(orientation="h", y=1.08, x=0), template="plotly_white")
        self._traces = {t.name: t for t in fig.data}
        return fig

    def refresh(self):
        """Redraw the curves and the status line from the trainer's history (in place)."""
        with self._lock:
            start = self._clock()
            rows = decimate(self.trainer.history, self.max_points)
            evals = decimate(self.trainer.eval_history, self.max_points)
            steps = np.array([m["step"] for m in rows], np.int64)
            eval_steps = np.array([m["step"] for m in evals], np.int64)
            t = self._traces
            with self.figure.batch_update():
                t["train loss"].update(x=steps, y=np.array([m["loss"] for m in rows]))
                t["tokens/s"].update(x=steps, y=np.array([m["tokens_per_s"] for m in rows]))
                t["val loss"].update(x=eval_steps, y=np.array([m["val_loss"] for m in evals]))
                if self.has_accuracy:
                    t["accuracy"].update(x=eval_steps,
                                         y=np.array([m.get("accuracy", np.nan) for m in evals]))
            self.plot_updates += 1
            self.status.value = self._status_html()
            self._plot_throttle.mark(self.trainer.step_count, self._clock() - start)

    def points(self):
        """Points per curve now (what the browser holds): {"train loss": n, ...}."""
        return {name: 0 if trace.x is None else len(trace.x) for name, trace in self._traces.items()}

    def _status_html(self):
        history, evals = self.trainer.history, self.trainer.eval_history
        parts = [f"step <b>{self.trainer.step_count}</b>"]
        if history:
            last = history[-1]
            recent = [m["tokens_per_s"] for m in history[-20:]]
            parts += [f"loss {last['loss']:.4f}", f"{statistics.median(recent):,.0f} tokens/s",
                      f"lr {last['lr']:.2e}"]
            if "threads" in last:    # chosen by timing steps (explorer/train/thread_tuner.py)
                parts.append(f"{last['threads']} thread{'s' if last['threads'] > 1 else ''}")
        if evals:
            parts.append(f"val loss {evals[-1]['val_loss']:.4f}")
            if "accuracy" in evals[-1]:
                parts.append(f"accuracy {evals[-1]['accuracy']:.1%}")
        parts.append(f"<i>{html.escape(self.runner.state)}</i>")
        return " &middot; ".join(parts)

    # ----------------------------------------------------------------- the sample
    def _refresh_sample(self):
        """Generate a sample from the model as it is now (the caller's thread does the work)."""
        step, start = self.trainer.step_count, self._clock()
        try:
            text = self._make_sample(step)
        except Exception as exc:   # a sample is a nicety: never let it stop training
            text = f"(no sample: {type(exc).__name__}: {exc})"
        self.sample.value = (f"<b>sample at step {step}</b>"
                             f"<pre style='white-space: pre-wrap; margin: 2px 0'>{html.escape(text)}</pre>")
        self._sample_step = step
        self._sample_throttle.mark(step, self._clock() - start)

    def _make_sample(self, step):
        from ..train.runs import sample_text, task_example  # toy task: prompt -> greedy answer

        data, model = self.trainer.data, self.trainer.model
        rng = np.random.default_rng(step)      # not the trainer's: sampling must not change training
        if hasattr(data, "sample") and getattr(data, "seq_len", None):
            return task_example(model, data, rng)
        tokenizer = getattr(data, "tokenizer", None)
        prompt = self.sample_prompt
        if prompt is None:
            prompt = "\n" if _can_encode(tokenizer, "\n") else ""
        return sample_text(model, tokenizer, prompt, tokens=self.sample_tokens, temperature=0.8,
                           seed=step)

    # ----------------------------------------------------------------- events (training thread)
    def _on_step(self, metrics):
        if self._plot_throttle.due(metrics["step"]):
            self.refresh()
        if self.sample_every_s and self._sample_throttle.due(metrics["step"]):
            self._refresh_sample()

    def _on_eval(self, _metrics):
        if self.runner.state != "running":   # during a run the next throttled redraw shows it
            self.refresh()

    def _on_state(self, event):
        self._show_state(event["state"])
        if event["state"] != "running":
            # the final redraw, then make the saved widget state match it (page reload);
            # the sample last: it is the slowest part (a text sample generates many tokens)
            self.refresh()
            self.figure.sync_state()
            if self._sample_step != self.trainer.step_count:
                self._refresh_sample()

    def _on_error(self, event):
        exc = event["error"]
        self.error.value = (f"<span style='color: #c00'>training paused at step {event['step']}: "
                            f"<b>{html.escape(type(exc).__name__)}</b>: {html.escape(str(exc))}</span>"
                            f"<details><summary>traceback</summary><pre>"
                            f"{html.escape(event['traceback'])}</pre></details>")

    def _on_reset(self, _event):
        self.error.value = ""
        self._plot_throttle.reset()
        self.refresh()
        self._refresh_sample()

    def _show_state(self, state):
        running = state == "running"
        self.buttons["Run"].disabled = running
        self.buttons["Step"].disabled = running
        self.buttons["Pause"].disabled = not running
        self.status.value = self._status_html()

    # ----------------------------------------------------------------- controls (main thread)
    def _on_run_clicked(self, _button):
        self.runner.run(self.steps.value or None)

    def _on_step_clicked(self, _button):
        try:
            self.runner.step(wait=False)
        except RuntimeError:   # clicked as a run was starting: Pause first (the button says so)
            pass

    def _on_lr_changed(self, change):
        self.runner.configure(lr=float(change["new"]))

    # ----------------------------------------------------------------- display
    def figures(self):
        return [self.figure]

    def summary(self):
        return f"Training dashboard: {plain_text(self._status_html())}"

    def static_html(self):
        """The status line and a small inline SVG of the loss: shows without JavaScript."""
        return (f"<div><b>Training dashboard</b>, as it was when this cell ran (the live view "
                f"and its controls need a running Jupyter kernel)<br>{self._status_html()}<br>"
                f"{_loss_svg(self.trainer.history)}</div>")

    def __repr__(self):
        return f"TrainingDashboard({self.runner!r})"


def _forget(dashboard):
    """Drop `dashboard` from _LIVE if it is its trainer's live one."""
    if _LIVE.get(dashboard.trainer) is dashboard:
        del _LIVE[dashboard.trainer]


def _can_encode(tokenizer, text):
    try:
        return tokenizer is not None and len(tokenizer.encode(text)) > 0
    except Exception:   # e.g. a character the tokenizer has never seen
        return False


def _loss_svg(history, width=360, height=80, points=200):
    """The train loss as an SVG polyline (no plotly.js needed)."""
    losses = [m["loss"] for m in decimate(history, points)]
    if len(losses) < 2:
        return ""
    lo, hi = min(losses), max(losses)
    span = (hi - lo) or 1.0
    xy = " ".join(f"{width * i / (len(losses) - 1):.1f},{height * (hi - v) / span:.1f}"
                  for i, v in enumerate(losses))
    return (f"<svg width='{width}' height='{height}' style='border: 1px solid #ddd'>"
            f"<polyline fill='none' stroke='{LOSS_COLOR}' stroke-width='1.5' points='{xy}'/></svg>"
            f"<br><small>train loss {hi:.3f} &rarr; {losses[-1]:.3f}</small>")
