"""KernelLab: check a kernel on the shapes a real model uses, then retrain with it.

    lab = KernelLab("reverse-tiny")              # a preset: its data, model size and schedule
    report = lab.check("gelu_backward", mine)    # random cases + calls captured from a real step
    run = lab.retrain("gelu_backward", mine)     # same model, same seed, same batches, your kernel
    run.losses, lab.reference().losses           # two curves to lay over each other

Every run builds its own model from the preset and seed, so nothing a student already
trained is touched, and a failing step (the trainer's steps are atomic) ends the run with
a message. All kernels but the candidate are the shipped ones during a run, whatever is
registered globally; the registry is restored after every step.
"""
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from .. import kernels
from ..train.presets import get_preset
from .cases import KERNEL_SPECS, Case, make_case
from .check import check_kernel
from .report import KernelReport
from .sandbox import Sandbox


@dataclass
class RetrainRun:
    kernel_name: str                # the registry name swapped ("" for the reference run)
    losses: list = field(default_factory=list)
    status: str = "running"         # "done", "stopped", "failed", "refused" (its check failed)
    error: str = ""
    report: object = None           # the KernelReport that allowed (or refused) the run
    first_step_s: float = None      # from calling retrain to the first step's loss
    seconds: float = 0.0
    trainer: object = field(default=None, repr=False)   # the run's trainer (and .model, .data)

    def __str__(self):
        label = self.kernel_name or "reference"
        last = f", final loss {self.losses[-1]:.4f}" if self.losses else ""
        why = f": {self.error}" if self.error else ""
        return f"{label}: {self.status} after {len(self.losses)} steps{last}{why}"


class KernelLab:
    def __init__(self, preset: str = "reverse-tiny", steps: int | None = None, seed: int = 0,
                 calls_per_kernel: int = 4) -> None:
        self.preset = get_preset(preset)
        self.steps = int(steps or self.preset.steps)
        self.seed = seed
        self.calls_per_kernel = calls_per_kernel
        self._reference = None
        self._calls = {}
        self._stop = threading.Event()
        self.sandbox = Sandbox()    # stop() cancels a check in progress through it
        self.checks = {}            # registry name -> the last KernelReport

    # ------------------------------------------------------------------ checking
    def model_calls(self, name: str) -> list[Case]:
        """Cases from one real training step of the preset's model: the arguments the model
        passed to kernel `name` (up to calls_per_kernel distinct shapes) and what the shipped
        kernel wrote. A kernel that passes these runs on exactly the shapes retraining uses."""
        if name not in self._calls:
            self._calls[name] = _capture(name, self.preset, self.seed, self.calls_per_kernel)
        return self._calls[name]

    def check(self, name: str, fn: Callable, **options) -> KernelReport:
        """check_kernel on random cases and on this lab's model calls (see model_calls)."""
        options.setdefault("sandbox", self.sandbox)
        report = check_kernel(name, fn, model_calls=self.model_calls(name), **options)
        self.checks[name] = report
        return report

    # ------------------------------------------------------------------ training
    def reference(self) -> RetrainRun:
        """The run with the shipped kernels (computed once, then kept)."""
        if self._reference is None or self._reference.status != "done":
            self._reference = self._train("", None, self.steps, time.perf_counter(), None)
        return self._reference

    def retrain(self, name: str, fn: Callable, steps: int | None = None,
                on_step: Callable[[RetrainRun, dict], None] | None = None) -> RetrainRun:
        """Check fn, then train the preset's model from the lab's seed with fn as kernel
        `name`. Returns a RetrainRun; status "refused" (with the report) if the check failed.
        on_step(run, metrics) is called after every step; stop() ends the run early."""
        started = time.perf_counter()
        self._stop.clear()
        report = self.check(name, fn, timing=False)
        if not report.passed:
            return RetrainRun(name, status="refused", report=report,
                              error="the kernel did not pass its check (see .report)")
        return self._train(name, report, steps or self.steps, started, on_step)

    def stop(self) -> None:
        """End a check in progress now, or a retrain after its current step (any thread)."""
        self._stop.set()
        self.sandbox.cancel()

    def _train(self, name, report, steps, started, on_step):
        _, _, trainer = self.preset.build(seed=self.seed)
        # a lab runs beside a browser: one thread is often faster then (explorer/train/thread_tuner.py);
        # the curves differ from a run with all threads only in their last bits
        trainer.threads = "auto"
        run = RetrainRun(name, report=report, trainer=trainer)
        swap = {name: report.kernel} if name else {}
        for _ in range(steps):
            if self._stop.is_set():
                run.status = "stopped"
                break
            try:
                with trainer.model.lock, only_shipped_except(**swap):
                    metrics = trainer.step()
            except Exception as exc:                      # noqa: BLE001 (the run ends, we don't)
                run.status, run.error = "failed", f"step {trainer.step_count + 1}: {type(exc).__name__}: {exc}"
                break
            run.losses.append(float(metrics["loss"]))
            if run.first_step_s is None:
                run.first_step_s = time.perf_counter() - started
            if on_step is not None:
                on_step(run, metrics)
        else:
            run.status = "done"
        run.seconds = time.perf_counter() - started
        return run

    # ------------------------------------------------------------------ keeping a kernel
    def install(self, name: str, fn: Callable) -> KernelReport:
        """Check fn on this lab's shapes and, only if it passes, register the checked build
        as kernel `name` for every model from now on (kernels.reset(name) undoes it).
        Returns the report; the registry is unchanged when it failed."""
        report = self.check(name, fn, timing=False)
        if report.passed:
            kernels.register(name, report.kernel)
        return report


@contextmanager
def only_shipped_except(**swap):
    """Every kernel the shipped one, except those given (restored on exit)."""
    with kernels.use(**{n: kernels.shipped(n) for n in kernels.names()}), kernels.use(**swap):
        yield


def _capture(name, preset, seed, limit):
    """Cases recorded from one training step of a fresh model (see KernelLab.model_calls)."""
    spec = KERNEL_SPECS[name]
    arg_names = list(make_case(name)[0])
    shipped = kernels.shipped(name)
    cases, shapes = [], set()

    def recorder(*args):
        before = dict(zip(arg_names, [a.copy() if isinstance(a, np.ndarray) else a for a in args]))
        returned = shipped(*args)
        shape = tuple(getattr(a, "shape", None) for a in args)
        if shape not in shapes and len(cases) < limit:
            shapes.add(shape)
            after = dict(zip(arg_names, args))
            expected = ({spec.outputs[0]: returned} if spec.returns else
                        {o: (None if after[o] is None else after[o].copy()) for o in spec.outputs})
            sizes = ", ".join("x".join(map(str, s)) for s in shape if s)
            cases.append(Case(f"model call {len(cases) + 1} ({sizes})", before, expected,
                              spec.masks(before) if spec.masks else {}, {}, floor=1e-12))
        return returned

    _, _, trainer = preset.build(seed=seed)
    with trainer.model.lock, only_shipped_except(**{name: recorder}):
        trainer.step()
    return cases
