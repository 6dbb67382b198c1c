"""BackgroundTrainer: run / pause / step / reset on a thread, errors, concurrent model use.

Nothing here asserts on timing: a step is held "in progress" with a gate in the data source,
so what happens between steps is deterministic."""
import threading

import numpy as np
import pytest
from helpers import GatedTokens

from explorer import GPT, GPTConfig, Trainer, kernels
from explorer.train import runner as runner_module
from explorer.train.runner import BackgroundTrainer

CONFIG = GPTConfig(n_layer=2, n_head=2, n_embd=32, vocab_size=37, block_size=8)
TIMEOUT = 60   # seconds; only reached when something is broken (a cold Numba compile is ~20 s)


def make_runner(**options):
    options = {"batch_size": 4, "lr": 1e-2, "seed": 0, **options}
    trainer = Trainer(GPT(CONFIG, seed=options["seed"]), GatedTokens(CONFIG.vocab_size, CONFIG.block_size), **options)
    return BackgroundTrainer(trainer)


@pytest.fixture
def runner():
    r = make_runner()
    yield r
    r.trainer.data.gate.set()   # never leave the thread blocked
    r.close()


def test_run_takes_exactly_the_steps_asked_and_goes_idle(runner):
    states = []
    runner.on("state", lambda e: states.append(e["state"]))
    runner.run(7)
    assert runner.wait(TIMEOUT)
    assert runner.trainer.step_count == 7 and len(runner.trainer.history) == 7
    assert runner.state == "idle"
    assert states == ["running", "idle"]


def test_run_without_steps_goes_to_the_configured_max():
    r = make_runner(max_steps=6)
    try:
        r.run()
        assert r.wait(TIMEOUT)
        assert r.trainer.step_count == 6 and r.state == "idle"
    finally:
        r.close()


def test_pause_takes_effect_after_the_step_in_progress(runner):
    data = runner.trainer.data
    runner.run(3)
    assert runner.wait(TIMEOUT)
    data.hold()
    runner.run()                      # until paused (max_steps is 0)
    assert data.entered.wait(TIMEOUT)  # step 4 is now in progress
    assert runner.state == "running"
    runner.pause()
    data.gate.set()
    assert runner.wait(TIMEOUT)
    assert runner.state == "paused"
    assert runner.trainer.step_count == 4   # the step in progress finished, no other began


def test_pause_from_a_step_listener_and_resume_to_the_target(runner):
    def pause_at_five(metrics):
        if metrics["step"] == 5:
            runner.pause()
    runner.on("step", pause_at_five)
    runner.run(10)
    assert runner.wait(TIMEOUT)
    assert (runner.state, runner.trainer.step_count) == ("paused", 5)
    runner.off("step", pause_at_five)
    runner.run()                      # resume: the remaining 5 steps
    assert runner.wait(TIMEOUT)
    assert (runner.state, runner.trainer.step_count) == ("idle", 10)


def test_step_advances_by_exactly_one(runner):
    metrics = runner.step()
    assert metrics["step"] == 1 and runner.trainer.step_count == 1 and runner.state == "idle"
    future = runner.step(wait=False)
    assert future.result(TIMEOUT)["step"] == 2
    # while paused, a step keeps the run paused
    runner.on("step", lambda m: m["step"] == 4 and runner.pause())
    runner.run(10)
    assert runner.wait(TIMEOUT) and runner.state == "paused"
    assert runner.step()["step"] == 5
    assert runner.state == "paused" and runner.trainer.step_count == 5


def test_step_while_running_is_refused(runner):
    data = runner.trainer.data
    data.hold()
    runner.run()
    assert data.entered.wait(TIMEOUT)
    with pytest.raises(RuntimeError, match="pause"):
        runner.step()
    runner.pause()
    data.gate.set()
    assert runner.wait(TIMEOUT)


def test_reset_reinitialises_in_place_and_reproduces_a_fresh_run(runner):
    trainer, model = runner.trainer, runner.trainer.model
    fresh = GPT(CONFIG, seed=0).flat_params.copy()
    runner.run(3)
    assert runner.wait(TIMEOUT)
    first_losses = [m["loss"] for m in trainer.history]
    runner.run(2)
    assert runner.wait(TIMEOUT)
    events = []
    runner.on("reset", events.append)
    runner.reset()
    assert trainer.model is model                       # views keep their reference
    assert trainer.step_count == 0 and trainer.history == [] and trainer.eval_history == []
    np.testing.assert_array_equal(model.flat_params, fresh)
    assert not trainer.m.any() and not trainer.v.any()
    assert events == [{"seed": 0, "step": 0}] and runner.state == "idle"
    runner.run(3)
    assert runner.wait(TIMEOUT)
    assert [m["loss"] for m in trainer.history] == first_losses


def test_reset_goes_through_the_trainers_own_reset(runner, monkeypatch):
    trainer, seeds = runner.trainer, []
    own_reset = trainer.reset
    monkeypatch.setattr(trainer, "reset", lambda seed=None: seeds.append(seed) or own_reset(seed))
    runner.reset(seed=5)
    assert seeds == [5] and trainer.config.seed == 5


def test_reset_with_a_seed_and_while_running(runner):
    data = runner.trainer.data
    data.hold()
    runner.run()
    assert data.entered.wait(TIMEOUT)
    future = runner.reset(seed=3, wait=False)
    data.gate.set()
    future.result(TIMEOUT)
    assert runner.wait(TIMEOUT) and runner.state == "idle"
    assert runner.trainer.step_count == 0 and runner.trainer.config.seed == 3
    np.testing.assert_array_equal(runner.trainer.model.flat_params, GPT(CONFIG, seed=3).flat_params)


def _broken_gelu(out, inp):
    raise ZeroDivisionError("student kernel: divided by zero")


def test_an_error_in_a_swapped_kernel_pauses_and_reports(runner):
    trainer = runner.trainer
    runner.run(2)
    assert runner.wait(TIMEOUT)
    before = trainer.model.flat_params.copy(), trainer.m.copy()
    errors = []
    runner.on("error", errors.append)
    with kernels.use(gelu_forward=_broken_gelu):
        runner.run(5)
        assert runner.wait(TIMEOUT)
    assert len(errors) == 1 and isinstance(errors[0]["error"], ZeroDivisionError)
    assert errors[0]["step"] == 2 and "student kernel" in errors[0]["traceback"]
    assert runner.state == "paused" and isinstance(runner.error, ZeroDivisionError)
    # the failed step changed nothing, and the thread still trains
    assert trainer.step_count == 2
    np.testing.assert_array_equal(trainer.model.flat_params, before[0])
    np.testing.assert_array_equal(trainer.m, before[1])
    runner.run()                       # resume the 5 steps asked for
    assert runner.wait(TIMEOUT)
    assert trainer.step_count == 7 and runner.state == "idle"


def test_a_registered_kernel_error_reaches_step_and_the_event(runner):
    errors = []
    runner.on("error", errors.append)
    kernels.register("gelu_forward", _broken_gelu)
    try:
        with pytest.raises(ZeroDivisionError):
            runner.step()
    finally:
        kernels.reset("gelu_forward")
    assert len(errors) == 1 and runner.trainer.step_count == 0 and runner.state == "idle"
    assert runner.step()["step"] == 1


def test_a_broken_runner_listener_is_reported_and_training_goes_on(runner, capsys):
    def broken_view(event):
        raise KeyError("a broken view")

    states = []
    runner.on("state", broken_view)
    runner.on("state", lambda e: states.append(e["state"]))
    runner.run(2)
    assert runner.wait(TIMEOUT)
    assert runner.trainer.step_count == 2 and states == ["running", "idle"]
    err = capsys.readouterr().err
    assert "a 'state' listener raised" in err and "a broken view" in err


def test_unknown_event_names_the_runners_and_the_trainers(runner):
    expected = "expected one of: state, error, reset, step, eval, run_start, run_end"
    for call in (runner.on, runner.off):
        with pytest.raises(ValueError, match=f"unknown event 'stat'; {expected}"):
            call("stat", print)


def test_model_forward_from_the_main_thread_while_training(runner):
    other = GPT(CONFIG, seed=5)
    x = np.arange(16).reshape(2, 8) % CONFIG.vocab_size
    expected = other.forward(x)[0].copy()
    runner.run(40)
    results, own = [], []
    while runner.trainer.step_count < 40 or len(results) < 5:
        results.append(other.forward(x)[0].copy())
        own.append(runner.trainer.model.forward(x)[0].copy())   # the model being trained
    assert runner.wait(TIMEOUT)
    assert runner.trainer.step_count == 40 and runner.error is None
    for result in results:
        np.testing.assert_array_equal(result, expected)
    assert all(np.isfinite(o).all() for o in own)


def test_configure_applies_between_steps(runner):
    data, trainer = runner.trainer.data, runner.trainer
    with pytest.raises(ValueError, match="lr"):
        runner.configure(lr=-1.0)
    runner.configure(lr=2e-3)                       # idle: at once
    assert trainer.config.lr == 2e-3
    data.hold()
    runner.run(2)
    assert data.entered.wait(TIMEOUT)
    runner.configure(lr=5e-3)                       # a step is in progress: after it
    assert trainer.config.lr == 2e-3
    data.gate.set()
    assert runner.wait(TIMEOUT)
    assert trainer.config.lr == 5e-3
    assert [m["lr"] for m in trainer.history] == [2e-3, 5e-3]


def test_thread_output_goes_to_the_cell_that_started_it(monkeypatch):
    class FakeShell:
        def __init__(self):
            self.parent, self.thread_parents = None, []

        def get_parent(self):
            return self.parent

        def set_thread_parent(self, parent):
            self.thread_parents.append((threading.current_thread().name, parent))

    shell = FakeShell()
    monkeypatch.setattr(runner_module, "_ipython_shell", lambda: shell)
    cell = {"header": {"msg_type": "execute_request", "msg_id": "cell-1"}}
    click = {"header": {"msg_type": "comm_msg", "msg_id": "click"}}
    r = make_runner()
    try:
        shell.parent = cell
        r.run(1)
        assert r.wait(TIMEOUT)
        shell.parent = click            # a button press: keep the cell's parent
        r.step()
    finally:
        r.close()
    assert shell.thread_parents == [("explorer-trainer", cell)] * 2


def test_close_ends_the_thread_and_leaves_the_trainer_usable():
    r = make_runner()
    r.run(2)
    assert r.wait(TIMEOUT)
    r.close()
    assert not r._thread.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        r.run(1)
    assert r.trainer.step()["step"] == 3


def test_one_runner_per_trainer():
    r = make_runner()
    try:
        assert BackgroundTrainer.of(r.trainer) is r
        with pytest.raises(RuntimeError, match="already has"):
            BackgroundTrainer(r.trainer)
    finally:
        r.close()
    fresh = BackgroundTrainer.of(r.trainer)     # the closed one is gone
    assert fresh is not r and fresh.step()["step"] == 1
    fresh.close()


def test_waiting_for_a_step_from_the_training_thread_is_refused(runner):
    errors = []

    def listener(metrics):
        try:
            runner.step()
        except RuntimeError as exc:
            errors.append(exc)
    runner.on("step", listener)
    runner.step(wait=False).result(TIMEOUT)
    assert len(errors) == 1 and "wait=False" in str(errors[0])
    assert runner.trainer.step_count == 1
