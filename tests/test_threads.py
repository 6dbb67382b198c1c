"""explorer.train.thread_tuner: the thread count follows measured step times;
explorer.kernels.runtime.using_threads really limits Numba and BLAS and restores them; the
trainer and its background runner use it; the kernels' work pool (for_each, in
explorer.kernels._workpool) runs every piece once and passes errors on."""
import os
import threading
import time

import numba
import numpy as np
import pytest
from threadpoolctl import threadpool_info

from explorer.kernels import runtime
from explorer.kernels._workpool import for_each
from explorer.kernels.runtime import max_threads, using_threads
from explorer.lab.sandbox import Sandbox
from explorer.train.presets import get_preset
from explorer.train.runner import BackgroundTrainer
from explorer.train.thread_tuner import ThreadTuner


def blas_threads():
    return {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}


def drive(tuner, seconds_for, steps):
    """Take `steps` steps whose time depends on the thread count; returns the counts used."""
    used = []
    for i in range(steps):
        n = tuner.next_threads()
        used.append(n)
        tuner.record(n, seconds_for(n, i))
    return used


def test_tuner_tries_each_count_in_turns_and_keeps_the_fastest(monkeypatch):
    monkeypatch.setattr("explorer.train.thread_tuner.max_threads", lambda: 4)
    tuner = ThreadTuner(candidates=[4, 3, 1], trial_steps=3, recheck_every=50)
    used = drive(tuner, lambda n, i: {4: 0.30, 3: 0.20, 1: 0.50}[n], 9 + 5)
    assert used[:9] == [4, 3, 1] * 3          # in turns, so a change in load hits all alike
    assert used[9:] == [3] * 5 and tuner.choice == 3
    assert tuner.trials == [(3, {4: 0.30, 3: 0.20, 1: 0.50})]


def test_one_slow_step_in_a_trial_does_not_decide_it():
    """The first step of a process compiles: a median of three ignores it."""
    tuner = ThreadTuner(candidates=[2, 1], trial_steps=3)
    drive(tuner, lambda n, i: 30.0 if i == 0 else {2: 0.1, 1: 0.2}[n], 6)
    assert tuner.choice == 2


def test_tuner_tries_again_when_steps_get_slower_and_every_recheck_every_steps():
    load = {"busy": False}
    tuner = ThreadTuner(candidates=[2, 1], trial_steps=3, recheck_every=40, slowdown=1.5)
    def times(n, i):
        return ({2: 1.4, 1: 0.45} if load["busy"] else {2: 0.33, 1: 0.55})[n]

    drive(tuner, times, 6)
    assert tuner.choice == 2
    drive(tuner, times, 10)
    load["busy"] = True                       # a browser starts drawing: 2 threads now slow
    drive(tuner, times, 2 + 6 + 1)            # two slow steps start a new trial of six
    assert tuner.choice == 1 and len(tuner.trials) == 2
    load["busy"] = False                      # quiet again: steps do not get slower, so only
    drive(tuner, times, 39)                   # the periodic re-check finds 2 threads again
    assert tuner.choice == 1
    drive(tuner, times, 1 + 6)
    assert tuner.choice == 2 and len(tuner.trials) == 3


def test_tuner_ignores_a_step_it_did_not_ask_for_and_refuses_bad_settings():
    tuner = ThreadTuner(candidates=[2, 1], trial_steps=1)
    tuner.record(1, 9.0)                      # asked for 2
    assert tuner.next_threads() == 2
    for bad in ({"candidates": [0]}, {"candidates": [max_threads() + 1]}, {"trial_steps": 0},
                {"slowdown": 1.0}):
        with pytest.raises(ValueError):
            ThreadTuner(**bad)


@pytest.mark.skipif(max_threads() < 2, reason="needs 2 threads to limit to 1")
def test_using_threads_limits_numba_and_blas_inside_only():
    before_numba, before_blas = numba.get_num_threads(), blas_threads()
    with using_threads(1):
        assert numba.get_num_threads() == 1
        assert blas_threads() == {1}
    assert numba.get_num_threads() == before_numba and blas_threads() == before_blas
    with pytest.raises(ValueError, match="from 1 to"):
        with using_threads(0):
            pass


def test_one_compute_lock_held_through_a_step():
    """The models' lock, the lab sandbox's and the runtime's are one object, and a step holds
    it: another thread cannot take it while a step listener runs."""
    _, model, trainer = get_preset("reverse-tiny").build(seed=0)
    assert model.lock is runtime.compute_lock and Sandbox().lock is runtime.compute_lock
    taken_elsewhere = []

    def try_from_another_thread(metrics):
        def attempt():
            got = model.lock.acquire(blocking=False)
            taken_elsewhere.append(got)
            if got:
                model.lock.release()
        thread = threading.Thread(target=attempt)
        thread.start()
        thread.join()

    trainer.on("step", try_from_another_thread)
    trainer.step()
    assert taken_elsewhere == [False]
    try_from_another_thread(None)                       # between steps it is free
    assert taken_elsewhere == [False, True]


def test_trainer_threads_setting_and_results_agree_across_counts():
    _, model_all, all_threads = get_preset("reverse-tiny").build(seed=0)
    _, model_one, one_thread = get_preset("reverse-tiny").build(seed=0)
    one_thread.threads = 1
    a = [all_threads.step()["loss"] for _ in range(4)]
    b = [one_thread.step() for _ in range(4)]
    assert all(m["threads"] == 1 for m in b) and "threads" not in all_threads.history[-1]
    np.testing.assert_allclose([m["loss"] for m in b], a, rtol=1e-6)
    np.testing.assert_allclose(model_one.flat_params, model_all.flat_params, atol=1e-5)
    for bad in (0, "fast", 1.5, True):
        with pytest.raises(ValueError, match="threads must be"):
            one_thread.threads = bad
    assert one_thread.threads == 1


def test_background_runner_picks_threads_by_timing_unless_they_were_set():
    _, _, trainer = get_preset("reverse-tiny").build(seed=0)
    with BackgroundTrainer(trainer) as runner:
        assert trainer.threads == "auto"
        runner.run(8)
        runner.wait(timeout=120)
    tuner = trainer.thread_tuner
    assert [m["threads"] for m in trainer.history[:2 * len(tuner.candidates)]] == tuner.candidates * 2
    assert all(m["threads"] in tuner.candidates for m in trainer.history)
    _, _, fixed = get_preset("reverse-tiny").build(seed=0)
    fixed.threads = 1
    with BackgroundTrainer(fixed):
        assert fixed.threads == 1 and fixed.thread_tuner is None


def test_for_each_calls_every_piece_once_on_the_threads_it_is_given():
    def run(count):
        calls, names = [], set()

        def piece(i):
            time.sleep(0.005)           # long enough that a second thread gets pieces too
            calls.append(i)
            names.add(threading.current_thread().name)
        for_each(count, piece)
        return sorted(calls), names

    calls, names = run(12)
    assert calls == list(range(12))
    assert len(names) == min(max_threads(), 12)
    with using_threads(1):
        calls, names = run(5)
    assert calls == list(range(5)) and names == {threading.current_thread().name}
    assert run(0) == ([], set())


def test_for_each_raises_the_first_error_after_the_other_threads_stop():
    running, ended = [], []

    def piece(i):
        running.append(i)
        if i == 3:
            raise ValueError("piece 3 is bad")
        time.sleep(0.005)
        ended.append(i)
    with pytest.raises(ValueError, match="piece 3 is bad"):
        for_each(50, piece)
    # nothing still runs once it has raised, and the pieces after the error were skipped
    assert len(ended) == len(running) - 1 and len(running) < 50


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork exists only on POSIX")
def test_for_each_works_in_a_forked_child():
    for_each(4, lambda i: None)             # the parent's helper threads exist now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:                            # child: the parent's threads are gone here
        try:
            calls, names = [], set()

            def piece(i):
                time.sleep(0.005)
                calls.append(i)
                names.add(threading.current_thread().name)
            for_each(8, piece)
            ok = sorted(calls) == list(range(8)) and len(names) == min(max_threads(), 8)
            os.write(write, b"ok" if ok else b"bad")
        finally:
            os._exit(0)
    os.close(write)
    answer = os.read(read, 16)
    os.waitpid(pid, 0)
    assert answer == b"ok"
