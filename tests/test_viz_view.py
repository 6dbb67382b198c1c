"""What every view shares (explorer/viz/view.py): after close() no training event reaches the
view and every widget it showed is closed; a closed view still shows its static copy."""
import sys
import threading
from types import SimpleNamespace

import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("plotly.graph_objects")

from explorer import GPT, GPTConfig, Trainer  # noqa: E402
from explorer.data import make_task  # noqa: E402
from explorer.tokenizers import CharTokenizer  # noqa: E402
from explorer.train.runner import BackgroundTrainer  # noqa: E402
from explorer.train.stats import GradientRecorder  # noqa: E402
from explorer.viz import (  # noqa: E402
    AttentionExplorer,
    GradientFlow,
    KernelLabView,
    SamplingView,
    StepThrough,
    TokenView,
    TrainingDashboard,
)
from explorer.viz.view import View, widget_tree  # noqa: E402

TIMEOUT = 60   # only reached when something is broken
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"

# views that listen to a trainer, each made from a fresh Trainer
LISTENING = {
    "dashboard": lambda trainer: TrainingDashboard(trainer, sample_every_s=0, min_interval_s=0),
    "dashboard of a runner": lambda trainer: TrainingDashboard(BackgroundTrainer.of(trainer),
                                                               sample_every_s=0, min_interval_s=0),
    "gradient flow": lambda trainer: GradientFlow(trainer, min_seconds=0),
    "gradient flow of a shared recorder": lambda trainer: GradientFlow(GradientRecorder(trainer), min_seconds=0),
    "attention": lambda trainer: AttentionExplorer(trainer=trainer, snapshot_every=1),
    "step-through": lambda trainer: StepThrough(trainer),
}


def small_trainer():
    task = make_task("reverse", length=3)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, vocab_size=task.vocab_size,
                          block_size=task.seq_len))
    return Trainer(model, task, batch_size=2, lr=1e-2)


class CallSpy:
    """While installed, records the name of every method called on `target`, on this thread
    and on threads started while it is installed (a BackgroundTrainer's)."""

    def __init__(self):
        self.target, self.calls = None, []

    def __call__(self, frame, event, _arg):
        code = frame.f_code
        if (event == "call" and code.co_argcount and code.co_varnames[0] == "self"
                and self.target is not None and frame.f_locals.get("self") is self.target):
            self.calls.append(code.co_name)

    def __enter__(self):
        sys.setprofile(self)
        threading.setprofile(self)
        return self

    def __exit__(self, *exc):
        sys.setprofile(None)
        threading.setprofile(None)


def every_event(trainer, runner):
    """Make the trainer and its runner send each of their events at least once."""
    runner.step()                         # run_start, step, run_end; state
    runner.run(2)
    assert runner.wait(TIMEOUT)
    trainer.evaluate()                    # eval
    runner.reset()                        # reset


def open_widgets(view):
    return [w for w in widget_tree(view.widget) if w.comm is not None]


@pytest.mark.parametrize("kind", LISTENING)
def test_after_close_no_event_reaches_the_view_and_its_widgets_are_closed(kind):
    trainer = small_trainer()
    with CallSpy() as spy:
        runner = BackgroundTrainer.of(trainer)   # its thread starts under the spy
        view = LISTENING[kind](trainer)
        try:
            spy.target = view
            every_event(trainer, runner)
            assert spy.calls, f"{kind}: no event reached the view before close (the spy sees nothing)"
            tree = widget_tree(view.widget)
            assert {id(f) for f in view.figures()} <= {id(w) for w in tree}, "every figure is shown"
            assert len(open_widgets(view)) == len(tree) > 1
            view.close()
            spy.calls.clear()
            every_event(trainer, runner)
            assert spy.calls == [], f"{kind}: events still reach the closed view: {sorted(set(spy.calls))}"
            assert open_widgets(view) == [], f"{kind}: widgets left open: {open_widgets(view)}"
        finally:
            spy.target = None
            runner.close()


def test_closing_a_view_leaves_a_shared_recorder_and_the_trainer_working():
    trainer = small_trainer()
    recorder = GradientRecorder(trainer)
    view = GradientFlow(recorder)
    trainer.run(2)
    view.close()
    view.close()                                        # a second close is harmless
    trainer.run(1)
    assert recorder.steps == [1, 2, 3] and trainer.step_count == 3
    assert view._on_record not in recorder.listeners("record")


def test_a_closed_view_shows_its_static_copy():
    trainer = small_trainer()
    view = StepThrough(trainer)
    trainer.run(1)
    live = view._repr_mimebundle_()
    assert WIDGET_VIEW in live
    view.close()
    closed = view._repr_mimebundle_()
    assert WIDGET_VIEW not in closed
    assert closed["text/html"] == live["text/html"] and "crossentropy" in closed["text/html"]
    assert closed["text/plain"].startswith("One training step") and "live" in closed["text/plain"]


def test_a_replaced_dashboard_stops_listening_but_stays_on_the_page():
    trainer = small_trainer()
    first = TrainingDashboard(trainer, sample_every_s=0)
    second = TrainingDashboard(trainer, sample_every_s=0)
    try:
        before = first.plot_updates
        second.runner.step()
        assert first.plot_updates == before and second.points()["train loss"] == 1
        assert len(open_widgets(first)) == len(widget_tree(first.widget)), "replaced, not closed"
        assert WIDGET_VIEW in first._repr_mimebundle_()
    finally:
        second.close()
        second.runner.close()


def test_views_without_events_close_their_widgets():
    tokenizer = CharTokenizer("abc ")
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, vocab_size=tokenizer.vocab_size, block_size=8))
    lab = SimpleNamespace(preset=SimpleNamespace(name="tiny"))   # all the view reads until Check
    for view in (TokenView(tokenizer, "abc"), SamplingView(model, tokenizer, "ab"),
                 KernelLabView(lab, "gelu_forward")):
        assert open_widgets(view), f"{type(view).__name__} shows no open widget"
        view.close()
        assert open_widgets(view) == [], f"{type(view).__name__}: widgets left open"


def test_a_view_must_say_what_it_shows_without_widgets():
    class Silent(View):
        def summary(self):
            return "a view with no static copy"

    with pytest.raises(TypeError, match="static_html"):
        Silent()
