"""Training in a background thread, so a notebook stays usable while a model learns.

    runner = BackgroundTrainer.of(trainer)   # the trainer's runner (made on first use)
    runner.run()          # returns at once; training goes on in the thread
    runner.pause()        # stops after the step in progress
    runner.step()         # exactly one step (while paused or idle); returns its metrics
    runner.reset()        # fresh weights, optimizer state and history; same model object
    runner.on("state", lambda e: print(e["state"], e["step"]))

Why a thread: widget callbacks (a Pause button) run on the kernel's main thread, so a cell
that trains in a loop would hold every click until it finishes. The runner owns ONE daemon
thread that takes commands (run, step, reset) from a queue; the main thread only sets flags,
so every method here returns quickly. The model's compute is serialised by its lock
(model.lock), so other cells may still call model.forward meanwhile.
Unless the trainer's `threads` was set, the runner sets it to "auto": the browser drawing the
views takes cores, and one thread is then often faster than all (explorer/train/thread_tuner.py).

States: "idle" (nothing to do), "running" (the thread is taking steps), "paused" (a run was
interrupted by pause() or by an error; run() resumes it). Events, called on the training
thread: "state" {"state", "step"}, "error" {"error", "traceback", "step"}, "reset"
{"seed", "step"}; and through `on` also the trainer's own events ("step", "eval", ...).
A runner event's listener that raises is reported on stderr and the others still run (a
broken view must not stop training); the trainer's events keep the trainer's rule.
"""
import sys
import threading
import traceback
import weakref
from collections import deque
from concurrent.futures import Future
from dataclasses import replace

import numpy as np

from .events import Events
from .trainer import EVENTS as TRAINER_EVENTS

RUNNER_EVENTS = ("state", "error", "reset")
_FOREVER = sys.maxsize     # "until paused": more steps than anyone will take
# trainer -> its open runner: two threads driving one trainer would fight over its steps
_RUNNERS = weakref.WeakKeyDictionary()
_RUNNERS_LOCK = threading.RLock()


class BackgroundTrainer:
    @classmethod
    def of(cls, trainer):
        """The trainer's open BackgroundTrainer, made now if it has none. Views use this, so
        a dashboard shown twice (a cell run again) drives the same thread."""
        with _RUNNERS_LOCK:
            runner = _RUNNERS.get(trainer)
            return runner if runner is not None else cls(trainer)

    def __init__(self, trainer):
        with _RUNNERS_LOCK:
            existing = _RUNNERS.get(trainer)
            if existing is not None:
                raise RuntimeError(f"this trainer already has a {existing!r}: share it with "
                                   f"BackgroundTrainer.of(trainer), or close() it first")
            _RUNNERS[trainer] = self
        self.trainer = trainer
        if trainer.threads is None:
            # beside a live UI other programs take cores: time steps, use what is fastest
            trainer.threads = "auto"
        self.state = "idle"
        self.error = None            # the last exception raised inside a step, if any
        self.error_traceback = None  # ... and its traceback, as text
        self._events = Events(RUNNER_EVENTS, on_error=_report_listener_error)
        self._cond = threading.Condition()
        self._queue = deque()        # single commands: ("step" | "reset", argument, Future)
        self._target = None          # absolute step count the current run() goes to
        self._pause_requested = False
        self._busy = False           # the thread is executing a command
        self._current = None         # ... and which: "run", "step" or "reset"
        self._pending_config = {}    # config changes to apply between steps
        self._closed = False
        self._parent = None          # IPython message that thread output belongs to
        self._thread = threading.Thread(target=self._loop, name="explorer-trainer", daemon=True)
        # the trainer clears its stop flag when a run starts; re-apply a pause that came earlier
        trainer.on("run_start", self._on_run_start)
        trainer.on("step", self._on_step)
        self._capture_parent()       # output before any run() goes under the creating cell
        self._thread.start()

    # ----------------------------------------------------------------- events
    def on(self, event, callback):
        """Call callback(payload: dict) on `event`: one of RUNNER_EVENTS, or any event of the
        trainer (which the trainer calls on the training thread)."""
        return self._events_of(event).on(event, callback)

    def off(self, event, callback):
        """Stop calling callback on `event` (ValueError if it was not subscribed)."""
        self._events_of(event).off(event, callback)

    def _events_of(self, event):
        """Who keeps `event`'s listeners: this runner, or its trainer."""
        if event in RUNNER_EVENTS:
            return self._events
        if event in TRAINER_EVENTS:
            return self.trainer
        raise ValueError(f"unknown event {event!r}; expected one of: "
                         f"{', '.join(RUNNER_EVENTS + TRAINER_EVENTS)}")

    def _set_state(self, state):
        with self._cond:
            changed, self.state = self.state != state, state
            self._cond.notify_all()
        if changed:
            self._events.emit("state", {"state": state, "step": self.trainer.step_count})

    # ----------------------------------------------------------------- commands
    def run(self, steps=None):
        """Start or resume training in the background; returns at once.

        steps: how many more steps to take. None resumes a paused run; otherwise it runs up to
        the trainer's config.max_steps if that lies ahead, else until pause()."""
        if steps is not None and (not isinstance(steps, (int, np.integer)) or steps < 1):
            raise ValueError(f"steps must be a positive integer or None, got {steps!r}")
        self._check_open()
        self._capture_parent()
        with self._cond:
            now = self.trainer.step_count
            if steps is not None:
                self._target = now + int(steps)
            elif self._target is None or self._target <= now:
                max_steps = self.trainer.config.max_steps
                self._target = max_steps if max_steps > now else _FOREVER
            self._pause_requested = False
            self._cond.notify_all()

    def pause(self):
        """Stop after the step in progress. Returns at once: `wait()` for the thread to settle."""
        with self._cond:
            if self._target is None:
                return
            self._pause_requested = True
            self.trainer.stop()
            self._cond.notify_all()

    def step(self, wait=True, timeout=None):
        """Take exactly one step on the training thread (when idle or paused).

        wait=True blocks until it is done and returns the step's metrics (raising the step's
        exception if it failed); wait=False returns a concurrent.futures.Future at once (what
        a button uses). Raises RuntimeError while a run() is in progress: pause() first."""
        self._check_open()
        with self._cond:
            if self._target is not None and not self._pause_requested:
                raise RuntimeError("training is running: call pause() before step()")
        return self._submit("step", None, wait, timeout)

    def reset(self, seed=None, wait=True, timeout=None):
        """Stop any run and start over: the model's weights re-initialised (GPT-2's init with
        `seed`, default trainer.config.seed), the optimizer's moments zeroed, the step count,
        history and data sampler reset. The model object stays the same, so views keep
        working. Runs on the training thread after the step in progress."""
        self._check_open()
        with self._cond:
            self._target = None
            self._pause_requested = False
            self.trainer.stop()
            for _, _, future in self._queue:   # steps asked for before the reset: dropped
                future.cancel()
            self._queue.clear()
        return self._submit("reset", seed, wait, timeout)

    def configure(self, **changes):
        """Change trainer.config fields (e.g. lr=3e-3) between steps. They are checked now
        (TrainConfig's own validation) and applied at once when no step is running, else
        right after the step in progress."""
        replace(self.trainer.config, **changes)   # raises on an unknown field or a bad value
        with self._cond:
            self._pending_config.update(changes)
            # between steps: no command running, or called from a listener on the thread
            if not self._busy or threading.current_thread() is self._thread:
                self._apply_config()

    def wait(self, timeout=None):
        """Block until the thread has nothing left to do (idle, or paused). True if it did
        within `timeout` seconds."""
        with self._cond:
            return self._cond.wait_for(self._settled, timeout)

    def close(self, timeout=5.0):
        """Stop training and end the thread; the trainer stays usable without it (and
        BackgroundTrainer.of(trainer) makes a new runner)."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._pause_requested = True
            self.trainer.stop()
            self._cond.notify_all()
        self._thread.join(timeout)
        self.trainer.off("run_start", self._on_run_start)
        self.trainer.off("step", self._on_step)
        with _RUNNERS_LOCK:
            if _RUNNERS.get(self.trainer) is self:
                del _RUNNERS[self.trainer]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"BackgroundTrainer(state={self.state!r}, step={self.trainer.step_count})"

    # ----------------------------------------------------------------- helpers (any thread)
    def _check_open(self):
        if self._closed:
            raise RuntimeError("this BackgroundTrainer is closed; make a new one")

    def _submit(self, kind, argument, wait, timeout):
        if wait and threading.current_thread() is self._thread:
            raise RuntimeError(f"{kind}() with wait=True from the training thread (e.g. in a "
                               f"step listener) would wait for itself: pass wait=False")
        future = Future()
        self._capture_parent()
        with self._cond:
            self._queue.append((kind, argument, future))
            self._cond.notify_all()
        return future.result(timeout) if wait else future

    def _settled(self):
        want_run = self._target is not None and not self._pause_requested
        return self._closed or not (self._busy or self._queue or want_run)

    def _apply_config(self):
        """Under self._cond, with no step running."""
        for key, value in self._pending_config.items():
            setattr(self.trainer.config, key, value)
        self._pending_config.clear()

    def _capture_parent(self):
        """Remember the notebook cell calling us, so output from the thread lands under it.
        Clicks arrive as widget messages with no output area: keep the last cell then."""
        shell = _ipython_shell()
        if shell is None or not hasattr(shell, "get_parent"):
            return
        parent = shell.get_parent()
        if (parent or {}).get("header", {}).get("msg_type") == "execute_request":
            self._parent = parent

    # ----------------------------------------------------------------- the training thread
    def _on_run_start(self, _payload):
        if (threading.current_thread() is self._thread and self._current == "run"
                and self._pause_requested):
            self.trainer.stop()

    def _on_step(self, _payload):
        if threading.current_thread() is self._thread and self._pending_config:
            with self._cond:
                self._apply_config()

    def _loop(self):
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closed or self._queue or self._wants_run())
                if self._closed:
                    break
                kind, argument, future = self._queue.popleft() if self._queue else ("run", None, None)
                if future is not None and not future.set_running_or_notify_cancel():
                    continue          # cancelled by a reset
                self._busy, self._current = True, kind
                parent = self._parent
            _set_thread_parent(parent)
            self._set_state("running")
            result, error = self._execute(kind, argument)
            # settle: resting state and its listeners first, so that whoever waits on
            # wait() or on the future sees everything (e.g. a dashboard's final redraw) done
            with self._cond:
                self._current = None
                self._apply_config()
                resting = "paused" if self._target is not None else "idle"
            self._set_state(resting)
            with self._cond:
                self._apply_config()
                self._busy = False
                self._cond.notify_all()
            if future is not None:
                future.set_exception(error) if error is not None else future.set_result(result)
        for _, _, future in self._queue:
            future.cancel()

    def _wants_run(self):
        return self._target is not None and not self._pause_requested

    def _execute(self, kind, argument):
        """Run one command; returns (result, None) or (None, the exception it raised)."""
        try:
            if kind == "run":
                return self._run_to_target(), None
            if kind == "step":
                return self.trainer.run(1), None
            return self._reset_now(argument), None
        except BaseException as exc:   # noqa: BLE001 - a student's kernel can raise anything
            self._record_error(exc)
            return None, exc

    def _run_to_target(self):
        with self._cond:
            remaining = self._target - self.trainer.step_count
        result = self.trainer.run(remaining) if remaining > 0 else None
        with self._cond:
            if self.trainer.step_count >= self._target:
                self._target = None          # done: idle
            else:
                self._pause_requested = True  # stopped early by pause(): paused
        return result

    def _record_error(self, exc):
        """The trainer's steps are atomic, so after a failed step it is as it was before:
        keep the thread, pause, and tell the listeners."""
        self.error = exc
        self.error_traceback = "".join(traceback.format_exception(exc))
        with self._cond:
            if self._target is not None:
                self._pause_requested = True
        if not self._events.listening("error"):
            print(f"explorer: training paused at step {self.trainer.step_count}: "
                  f"{type(exc).__name__}: {exc}", file=sys.stderr)
        self._events.emit("error", {"error": exc, "traceback": self.error_traceback,
                                    "step": self.trainer.step_count})

    def _reset_now(self, seed):
        trainer = self.trainer
        seed = trainer.reset(seed)
        self.error = self.error_traceback = None
        self._events.emit("reset", {"seed": seed, "step": 0})
        return None


def _report_listener_error(event, exc):
    """A runner event's listener raised: report it and go on (a broken view must not stop
    training)."""
    print(f"explorer: a {event!r} listener raised:", file=sys.stderr)
    traceback.print_exception(exc)


def _ipython_shell():
    """The running IPython shell, or None outside IPython (no import of IPython if absent)."""
    ipython = sys.modules.get("IPython")
    return ipython.get_ipython() if ipython is not None else None


def _set_thread_parent(parent):
    """Tag this thread's output with `parent` (ipykernel >= 6.? has set_thread_parent)."""
    shell = _ipython_shell()
    if parent is None or shell is None:
        return
    setter = getattr(shell, "set_thread_parent", None)
    if setter is not None:
        setter(parent)
