"""TrainingDashboard without a browser: press its buttons, set its controls, and check the
widget and figure state. Also the helpers it uses (decimation, throttle, figure state sync)."""

import numpy as np
import pytest
from helpers import GatedTokens

pytest.importorskip("ipywidgets")
go = pytest.importorskip("plotly.graph_objects")

from explorer import GPT, GPTConfig, Trainer, kernels  # noqa: E402
from explorer.data import make_task  # noqa: E402
from explorer.train.runner import BackgroundTrainer  # noqa: E402
from explorer.viz import TrainingDashboard  # noqa: E402
from explorer.viz._decimate import decimate, decimation_stride  # noqa: E402
from explorer.viz._figure import sync_saved_state  # noqa: E402
from explorer.viz._throttle import Throttle  # noqa: E402

CONFIG = GPTConfig(n_layer=1, n_head=2, n_embd=16, vocab_size=11, block_size=8)
TIMEOUT = 60   # only reached when something is broken


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def make_dashboard():
    made = []

    def make(data=None, config=CONFIG, **options):
        data = data if data is not None else GatedTokens(CONFIG.vocab_size, CONFIG.block_size)
        trainer = Trainer(GPT(config), data, batch_size=2, lr=1e-2)
        options = {"sample_every_s": 0, **options}
        dash = TrainingDashboard(trainer, **options)
        made.append(dash)
        return dash
    yield make
    for dash in made:
        if hasattr(dash.trainer.data, "gate"):
            dash.trainer.data.gate.set()
        dash.close()
        dash.runner.close()


def click(dash, name):
    dash.buttons[name].click()


def test_step_adds_one_step_and_one_loss_point(make_dashboard):
    dash = make_dashboard()
    assert dash.points()["train loss"] == 0
    click(dash, "Step")
    assert dash.runner.wait(TIMEOUT)
    assert dash.trainer.step_count == 1 and dash.points()["train loss"] == 1
    click(dash, "Step")
    assert dash.runner.wait(TIMEOUT)
    assert dash.trainer.step_count == 2 and dash.points()["train loss"] == 2
    assert list(dash.figure.data[0].x) == [1, 2]
    assert "step <b>2</b>" in dash.status.value and "idle" in dash.status.value
    threads = dash.trainer.history[-1]["threads"]   # the runner times steps to choose
    assert f"{threads} thread" in dash.status.value


def test_run_then_pause_stops_the_counter_and_buttons_never_wait(make_dashboard):
    dash = make_dashboard()
    data = dash.trainer.data
    data.gate.clear()
    click(dash, "Run")                      # steps box 0: until paused (no max_steps)
    assert data.entered.wait(TIMEOUT)       # step 1 is held in progress
    assert dash.buttons["Run"].disabled and not dash.buttons["Pause"].disabled
    # every control returns while the step is held: they only set flags
    dash.lr.value = 3e-3
    click(dash, "Step")                     # refused quietly while running
    click(dash, "Pause")
    data.gate.set()
    assert dash.runner.wait(TIMEOUT)
    assert dash.runner.error is None        # no click blocked the held step into a timeout
    assert dash.runner.state == "paused" and dash.trainer.step_count == 1
    assert dash.trainer.config.lr == 3e-3
    assert dash.points()["train loss"] == 1 and "paused" in dash.status.value
    assert not dash.buttons["Run"].disabled and dash.buttons["Pause"].disabled
    click(dash, "Step")
    assert dash.runner.wait(TIMEOUT) and dash.trainer.step_count == 2


def test_run_takes_the_steps_in_the_box(make_dashboard):
    dash = make_dashboard(steps=5)
    click(dash, "Run")
    assert dash.runner.wait(TIMEOUT)
    assert dash.trainer.step_count == 5 and dash.points()["train loss"] == 5


def test_reset_clears_curves_and_step_count(make_dashboard):
    task = make_task("reverse", length=3)
    dash = make_dashboard(task, GPTConfig(n_layer=1, n_head=2, n_embd=16,
                                          vocab_size=task.vocab_size, block_size=task.seq_len))
    dash.steps.value = 3
    click(dash, "Run")
    assert dash.runner.wait(TIMEOUT)
    dash.trainer.evaluate()                 # a val loss and accuracy point
    assert dash.points() == {"train loss": 3, "val loss": 1, "accuracy": 1, "tokens/s": 3}
    click(dash, "Reset")
    assert dash.runner.wait(TIMEOUT)
    assert dash.trainer.step_count == 0
    assert dash.points() == {"train loss": 0, "val loss": 0, "accuracy": 0, "tokens/s": 0}
    assert "step <b>0</b>" in dash.status.value and "sample at step 0" in dash.sample.value


def test_lr_control_sets_the_trainer_config(make_dashboard):
    dash = make_dashboard()
    dash.lr.value = 1e-3
    assert dash.trainer.config.lr == pytest.approx(1e-3)
    click(dash, "Step")
    assert dash.runner.wait(TIMEOUT)
    assert dash.trainer.history[-1]["lr"] == pytest.approx(1e-3)


def test_plotted_points_stay_capped_on_a_long_history(make_dashboard):
    dash = make_dashboard(max_points=300)
    history = [{"step": s, "loss": 1.0 / s, "lr": 1e-3, "tokens_per_s": 1e4}
               for s in range(1, 10_001)]
    dash.trainer.history.extend(history)
    dash.refresh()
    points = dash.points()
    assert 150 < points["train loss"] <= 300 and points["tokens/s"] == points["train loss"]
    x = np.asarray(dash.figure.data[0].x)
    assert x[0] == 1 and x[-1] == 10_000        # first and newest step both shown


def test_throttling_limits_figure_updates():
    clock = FakeClock()
    trainer = Trainer(GPT(CONFIG), GatedTokens(CONFIG.vocab_size, CONFIG.block_size), batch_size=2, lr=1e-2)
    trainer.on("step", lambda m: setattr(clock, "now", clock.now + 0.1))  # each step: 0.1 s
    for plot_every, expected in [(5, 4), (1, 6)]:
        dash = TrainingDashboard(trainer, plot_every=plot_every, min_interval_s=0.25,
                                 sample_every_s=0, clock=clock)
        try:
            before = dash.plot_updates
            dash.runner.run(20)
            assert dash.runner.wait(TIMEOUT)
            # every 5 steps (0.5 s) / every 3 steps (0.3 s >= 0.25 s), plus the final redraw
            assert dash.plot_updates - before == expected + 1
        finally:
            dash.close()
    dash.runner.close()
    # no clock movement at all: only the final redraw
    frozen = FakeClock()
    data = GatedTokens(CONFIG.vocab_size, CONFIG.block_size)
    dash = TrainingDashboard(Trainer(GPT(CONFIG), data, batch_size=2), clock=frozen, sample_every_s=0)
    try:
        before = dash.plot_updates
        dash.runner.run(10)
        assert dash.runner.wait(TIMEOUT)
        assert dash.plot_updates - before == 1 and dash.points()["train loss"] == 10
    finally:
        dash.close()
        dash.runner.close()


def test_saved_widget_state_matches_the_figure_when_idle(make_dashboard):
    dash = make_dashboard(steps=4)
    click(dash, "Run")
    assert dash.runner.wait(TIMEOUT)
    saved = dash.figure._widget_data[0]
    np.testing.assert_array_equal(saved["x"], [1, 2, 3, 4])


def test_error_in_a_kernel_is_shown_escaped(make_dashboard):
    dash = make_dashboard()

    def broken(out, inp):
        raise ValueError("<bad> kernel")
    with kernels.use(gelu_forward=broken):
        dash.steps.value = 3
        click(dash, "Run")
        assert dash.runner.wait(TIMEOUT)
    assert dash.runner.state == "paused" and dash.trainer.step_count == 0
    assert "&lt;bad&gt; kernel" in dash.error.value and "<bad>" not in dash.error.value
    click(dash, "Run")                       # the kernel is back: resume
    assert dash.runner.wait(TIMEOUT) and dash.trainer.step_count == 3
    click(dash, "Reset")
    assert dash.runner.wait(TIMEOUT) and dash.error.value == ""


def test_sample_for_a_toy_task_and_static_fallback(make_dashboard):
    task = make_task("reverse", length=3)
    dash = make_dashboard(task, GPTConfig(n_layer=1, n_head=2, n_embd=16,
                                          vocab_size=task.vocab_size, block_size=task.seq_len))
    assert "-&gt;" in dash.sample.value       # "prompt -> answer (right|wrong)", escaped
    dash.steps.value = 2
    click(dash, "Run")
    assert dash.runner.wait(TIMEOUT)
    assert "sample at step 2" in dash.sample.value
    bundle = dash._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert "step <b>2</b>" in bundle["text/html"] and "<svg" in bundle["text/html"]
    assert len(dash.static_figure().data[0].x) == 2


def test_a_new_dashboard_replaces_the_old_one_and_shares_the_runner():
    trainer = Trainer(GPT(CONFIG), GatedTokens(CONFIG.vocab_size, CONFIG.block_size), batch_size=2)
    runner = BackgroundTrainer.of(trainer)
    first = TrainingDashboard(trainer, sample_every_s=0)
    again = TrainingDashboard(trainer, sample_every_s=0)     # the cell run again
    assert first.runner is runner and again.runner is runner
    assert "replaced" in first.status.value
    assert runner.step()["step"] == 1
    assert first.points()["train loss"] == 0     # the old one no longer listens
    assert again.points()["train loss"] == 1
    again.close()
    assert runner.step()["step"] == 2            # closing a view leaves the runner working
    assert again.points()["train loss"] == 1
    runner.close()


# ----------------------------------------------------------------- the helpers
@pytest.mark.parametrize("max_points", [2, 3, 10, 64])
def test_decimate_keeps_at_most_max_points_with_a_uniform_stride(max_points):
    for n in range(0, 700):
        values = list(range(n))
        kept = decimate(values, max_points)
        assert len(kept) <= max_points
        if n == 0:
            assert kept == []
            continue
        assert kept[0] == 0 and kept[-1] == n - 1
        if n <= max_points:
            assert kept == values
            continue
        stride = decimation_stride(n, max_points)
        regular = kept[:-1] if (n - 1) % stride else kept
        assert all(b - a == stride for a, b in zip(regular, regular[1:]))


def test_throttle_needs_both_steps_and_seconds():
    clock = FakeClock()
    throttle = Throttle(min_steps=3, min_seconds=0.25, clock=clock)
    assert throttle.due(0)                   # nothing drawn yet
    throttle.mark(0)
    clock.now += 1.0
    assert not throttle.due(2)               # enough time, too few steps
    assert throttle.due(3)
    throttle.mark(3)
    clock.now += 0.1
    assert not throttle.due(10)              # enough steps, too little time
    clock.now += 0.2
    assert throttle.due(10)


def test_throttle_spaces_out_costly_work_to_stay_in_budget():
    clock = FakeClock()
    throttle = Throttle(min_steps=1, min_seconds=0.25, budget=0.02, clock=clock)
    throttle.mark(0, cost=0.001)             # cheap: the 0.25 s floor rules
    clock.now += 0.25
    assert throttle.due(1)
    throttle.mark(1, cost=0.1)               # 0.1 s of work at 2%: next one 5 s later
    assert throttle.wait_seconds() == pytest.approx(5.0)
    clock.now += 4.9
    assert not throttle.due(2)
    clock.now += 0.2
    assert throttle.due(2)


def test_sync_saved_state_copies_the_live_figure():
    fig = go.FigureWidget()
    fig.add_scatter(x=[0], y=[0])
    with fig.batch_update():
        fig.data[0].x, fig.data[0].y = [1, 2, 3], [4, 5, 6]
        fig.layout.title.text = "loss"
    assert sync_saved_state(fig) is True
    assert list(fig._widget_data[0]["x"]) == [1, 2, 3]
    assert fig._widget_layout["title"]["text"] == "loss"
    fig.data[0].x = [7]                      # a deep copy: later edits don't leak into it
    assert list(fig._widget_data[0]["x"]) == [1, 2, 3]
    assert sync_saved_state(object()) is False
