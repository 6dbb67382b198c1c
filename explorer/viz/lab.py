"""The kernel lab view: Check, Retrain and Stop for one student kernel.

    view = KernelLabView(lab, "layernorm_backward", my_layernorm_backward)
    view                     # buttons, the check's report, where the error is, two loss curves
    view.kernel = edited     # after editing: the next Check / Retrain uses it

Check and Retrain run in a background thread (the notebook stays usable, and Stop can end
an endless loop in the sandbox or a retrain between steps). The loss figure lays the
student's run over the lab's reference run (same model, seed and batches). Closing the view
removes it from the page; a check or retrain in progress runs on (lab.stop() ends it).
"""
from __future__ import annotations

import html
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import ipywidgets as widgets

from ._figure import FigureWidget
from ._throttle import Throttle
from .view import View, plain_text

if TYPE_CHECKING:
    from ..lab.retrain import KernelLab


class KernelLabView(View):
    def __init__(self, lab: KernelLab, name: str, kernel: Callable | None = None,
                 min_interval_s: float = 0.25) -> None:
        """lab: the KernelLab that checks and retrains; name: the kernel's registry name
        (e.g. "layernorm_backward"); kernel: the student's function (or set view.kernel later).
        min_interval_s: the least time between two redraws of the loss curve."""
        super().__init__()
        self.lab, self.name, self.kernel = lab, name, kernel
        self.report = None
        self.run = None
        self._thread = None
        self._throttle = Throttle(1, min_interval_s)
        self.check_button = widgets.Button(description="Check", icon="check",
                                           tooltip="compare your kernel with the reference")
        self.retrain_button = widgets.Button(description="Retrain", icon="play",
                                             tooltip="train the lab's model again with your kernel")
        self.stop_button = widgets.Button(description="Stop", icon="stop", disabled=True,
                                          tooltip="end the check or retrain in progress")
        self.status = widgets.HTML(f"<b>{html.escape(name)}</b>: not checked yet")
        self.report_html = widgets.HTML("")
        self.error_figure = FigureWidget(layout=dict(
            height=260, margin=dict(l=50, r=20, t=40, b=40),
            title=dict(text="where your output differs (|yours - expected|)", font=dict(size=13))))
        self.error_figure.add_heatmap(z=[[0]], colorscale="Reds", showscale=True,
                                      hovertemplate="row %{y}, column %{x}: error %{z:.2e}<extra></extra>")
        self.error_box = widgets.Box([self.error_figure], layout=widgets.Layout(display="none"))
        self.loss_figure = FigureWidget(layout=dict(
            height=300, margin=dict(l=50, r=20, t=40, b=40), xaxis_title="step",
            yaxis_title="training loss", yaxis_type="log",
            title=dict(text=f"retraining {lab.preset.name} with your {name}", font=dict(size=13))))
        self.loss_figure.add_scatter(name="reference kernels", mode="lines",
                                     line=dict(color="#888", width=4))
        self.loss_figure.add_scatter(name=f"your {name}", mode="lines", line=dict(color="#d62728"))
        self.check_button.on_click(lambda _b: self._start(self._check))
        self.retrain_button.on_click(lambda _b: self._start(self._retrain))
        self.stop_button.on_click(lambda _b: self.lab.stop())
        self.widget = widgets.VBox([
            widgets.HBox([self.check_button, self.retrain_button, self.stop_button]),
            self.status, self.report_html, self.error_box, self.loss_figure])

    # ------------------------------------------------------------------ actions
    def check(self, wait=True):
        """What the Check button does (wait=False returns at once; see busy / wait())."""
        self._start(self._check)
        if wait:
            self.wait()
        return self.report

    def retrain(self, wait=True):
        """What the Retrain button does."""
        self._start(self._retrain)
        if wait:
            self.wait()
        return self.run

    def wait(self, timeout=None):
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    @property
    def busy(self):
        return self._thread is not None and self._thread.is_alive()

    def _start(self, job):
        if self.busy:
            return
        if self.kernel is None:
            self.status.value = (f"<b>{html.escape(self.name)}</b>: no kernel yet; set "
                                 f"<code>view.kernel = your_function</code>")
            return
        self._set_busy(True)
        self._thread = threading.Thread(target=self._guarded, args=(job,), daemon=True,
                                        name=f"kernel-lab-{self.name}")
        self._thread.start()

    def _guarded(self, job):
        try:
            job()
        except Exception as exc:                          # noqa: BLE001 (shown, not lost)
            self.status.value = f"<b style='color:#b42318'>{html.escape(type(exc).__name__)}: " \
                                f"{html.escape(str(exc))}</b>"
        finally:
            self._set_busy(False)

    def _set_busy(self, busy):
        self.check_button.disabled = self.retrain_button.disabled = busy
        self.stop_button.disabled = not busy

    def _check(self):
        self.status.value = f"<b>{html.escape(self.name)}</b>: checking..."
        self.show_report(self.lab.check(self.name, self.kernel))

    def _retrain(self):
        self.status.value = "training the reference run (once)..."
        reference = self.lab.reference()
        with self.loss_figure.batch_update():
            self.loss_figure.data[0].update(x=list(range(1, len(reference.losses) + 1)),
                                            y=reference.losses)
            self.loss_figure.data[1].update(x=[], y=[])
        self.status.value = f"<b>{html.escape(self.name)}</b>: checking, then retraining..."
        self._throttle.reset()
        self.run = self.lab.retrain(self.name, self.kernel, on_step=self._on_step)
        self._draw_run(self.run)
        self.show_report(self.run.report)
        self.status.value = _run_status(self.run, reference)
        self.loss_figure.sync_state()

    def _on_step(self, run, _metrics):
        step = len(run.losses)
        if self._throttle.due(step):
            self._draw_run(run)
            self._throttle.mark(step)
            self.status.value = f"<b>{html.escape(self.name)}</b>: retraining, step {step}, " \
                                f"loss {run.losses[-1]:.4f}"

    def _draw_run(self, run):
        self.loss_figure.data[1].update(x=list(range(1, len(run.losses) + 1)), y=list(run.losses))

    # ------------------------------------------------------------------ the report
    def show_report(self, report):
        self.report = report
        self.report_html.value = report._repr_html_()
        verdict = "passed" if report.passed else "failed"
        self.status.value = f"<b>{html.escape(self.name)}</b>: check {verdict}"
        worst = report.worst() if not report.passed else None
        error_map = getattr(worst, "error_map", None)
        self.error_box.layout.display = "none" if error_map is None else ""
        with self.error_figure.batch_update():
            if error_map is not None:
                self.error_figure.data[0].z = error_map
                self.error_figure.layout.title.text = (
                    f"|yours - expected| for {worst.output}, {worst.case} "
                    f"(rows: every index but the last, flattened)")
        self.error_figure.sync_state()

    # ------------------------------------------------------------------ display
    def figures(self):
        return [self.loss_figure, self.error_figure]

    def summary(self):
        return f"Kernel lab: {plain_text(self.status.value)}"

    def static_html(self):
        body = self.report._repr_html_() if self.report else "not checked yet"
        return (f"<div><b>Kernel lab: {html.escape(self.name)}</b> (the buttons need a running "
                f"Jupyter kernel)<br>{body}</div>")

    def __repr__(self):
        return f"KernelLabView({self.name!r}, {self.report!r})"


def _run_status(run, reference):
    if run.status != "done":
        return f"<b style='color:#b42318'>{html.escape(str(run))}</b>"
    gap = abs(run.losses[-1] - reference.losses[-1])
    return (f"<b style='color:#1a7f37'>{html.escape(str(run))}</b>; the reference ended at "
            f"{reference.losses[-1]:.4f} (difference {gap:.1e}); first step "
            f"{run.first_step_s:.2f} s after pressing Retrain")
