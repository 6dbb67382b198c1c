"""The training loop: one atomic step at a time, with events that views subscribe to.

    trainer = Trainer(model, data, batch_size=32, lr=1e-3)
    trainer.on("step", lambda m: print(m["step"], m["loss"]))
    trainer.run(200)

A step is forward -> backward -> clip (global norm) -> AdamW. It is atomic: if anything
raises inside it (a bad batch, a student's kernel, a NaN loss), the parameters, the
optimizer state, the step counter and the data sampler are as they were before it.

Under mpiexec (or given an MPI communicator) the same step runs data-parallel: each process
computes its share of the batch's rows and the gradients are averaged over processes
(explorer.train.distributed). The numbers are those of one process, up to summation order.
"""
from __future__ import annotations

import contextlib
import functools
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

import numpy as np

from .. import kernels
from ..kernels.adamw import count_nonfinite
from ..kernels.clip import clip_scale
from ..kernels.runtime import max_threads, using_threads
from ..model.gpt import GPT
from . import warmup
from .distributed import DEFAULT_TIMEOUT_S, DataParallel, data_parallel, shard_segments
from .events import Events
from .thread_tuner import ThreadTuner

EVENTS = ("step", "eval", "run_start", "run_end")
#: What check_state() returns and put_state() writes: AdamW's m and v, the step count, and
#: the data sampler's generator (None: keep this trainer's).
TrainerState = tuple[np.ndarray, np.ndarray, int, np.random.Generator | None]


class Batches(Protocol):
    """What a trainer trains on (explorer.data's corpora and tasks are such)."""

    def get_batch(self, split: str, batch_size: int, seq_len: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(inputs, targets): int64 arrays of shape (batch_size, T), T <= seq_len (a task's
        examples may be shorter), from `split` ("train" or "val"), drawn with rng; a target
        of -1 is not scored."""


@dataclass
class TrainConfig:
    batch_size: int = 16
    lr: float = 1e-3               # peak learning rate (after warmup)
    min_lr: float = 0.0            # floor of the cosine decay (as an absolute rate)
    warmup_steps: int = 0          # linear warmup from lr / warmup_steps to lr
    max_steps: int = 0             # cosine decay length; 0 keeps lr constant after warmup
    weight_decay: float = 0.1      # decoupled, on 2-D weights only
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float | None = 1.0  # max global grad norm; 0 or None turns clipping off
    seq_len: int | None = None     # T of the batches; None: the data's own or block_size
    eval_interval: int = 0         # validate every N steps during run(); 0: never
    eval_batches: int = 4
    seed: int = 0

    def __post_init__(self):
        _integer("batch_size", self.batch_size, 1)
        _number("lr", self.lr, above=0)
        _number("min_lr", self.min_lr, at_least=0)
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr={self.min_lr} is larger than lr={self.lr}: the cosine decay "
                             f"would raise the rate; expected 0 <= min_lr <= lr")
        _integer("warmup_steps", self.warmup_steps, 0)
        _integer("max_steps", self.max_steps, 0)
        _number("weight_decay", self.weight_decay, at_least=0)
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            _number(name, value, at_least=0)
            if not value < 1:
                raise ValueError(f"{name} must lie in [0, 1), got {value!r}")
        _number("eps", self.eps, above=0)
        if self.grad_clip is not None:
            _number("grad_clip", self.grad_clip, at_least=0,
                    allowed="a number >= 0 (0 or None turns clipping off)")
        if self.seq_len is not None:
            _integer("seq_len", self.seq_len, 1, allowed="an integer >= 1, or None for the "
                     "data's own length or the model's block_size")
        _integer("eval_interval", self.eval_interval, 0, allowed="an integer >= 0 (0: never)")
        _integer("eval_batches", self.eval_batches, 1)
        _integer("seed", self.seed, 0)


def _integer(name, value, minimum, allowed=None):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be {allowed or f'an integer >= {minimum}'}, got {value!r}")


def _number(name, value, *, above=None, at_least=None, allowed=None):
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    ok = ok and math.isfinite(value)
    ok = ok and (above is None or value > above) and (at_least is None or value >= at_least)
    if not ok:
        bound = f"> {above}" if above is not None else f">= {at_least}"
        raise ValueError(f"{name} must be {allowed or f'a finite number {bound}'}, got {value!r}")


def learning_rate(step: int, cfg: TrainConfig) -> float:
    """Linear warmup, then cosine decay from lr to min_lr over max_steps (step counts from 0)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.max_steps <= cfg.warmup_steps:
        return cfg.lr
    progress = min(1.0, (step - cfg.warmup_steps) / (cfg.max_steps - cfg.warmup_steps))
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)


class Trainer:
    def __init__(self, model: GPT, data: Batches, batch_size: int = 16, lr: float = 1e-3, *,
                 comm: Any = "auto", zero: int = 0, rank_timeout: float = DEFAULT_TIMEOUT_S,
                 **options: Any):
        """options: TrainConfig's fields. comm: "auto" (data-parallel over MPI's world when a
        launcher such as mpiexec started several processes), None (this process alone), or an
        mpi4py communicator. zero=1 shards AdamW's m and v over the ranks (ZeRO-1).
        rank_timeout: seconds a rank waits for the others before it names the silent ones."""
        self.model = model
        self.data = data
        self.config = TrainConfig(batch_size=batch_size, lr=lr, **options)
        vocab = getattr(data, "vocab_size", None)
        if vocab is not None and vocab > model.config.vocab_size:
            raise ValueError(f"the data has {vocab} token ids but the model's vocab_size is "
                             f"{model.config.vocab_size}")
        self.seq_len = (self.config.seq_len if self.config.seq_len is not None
                        else getattr(data, "seq_len", None) or model.config.block_size)
        if self.seq_len > model.config.block_size:
            raise ValueError(f"seq_len={self.seq_len} is longer than the model's block_size="
                             f"{model.config.block_size}")
        #: the ranks this trainer trains with (None: one process); see train/distributed.py
        self.distributed: DataParallel | None = data_parallel(comm, model.num_params, zero,
                                                              rank_timeout)
        dp = self.distributed
        # the slice of the flat buffers this process updates: all of it, or 1/N under ZeRO-1
        self._owned = dp.owned if dp is not None and dp.zero else slice(0, model.num_params)
        if dp is not None:
            dp.rows(self.config.batch_size)        # raises if some rank would get no row
            # one starting point: rank 0's weights (as PyTorch's DDP does)
            dp.broadcast(model.flat_params, "sharing rank 0's initial weights")
        # AdamW's moments (this process's slice of them). Read-only outside a step: only the
        # optimizer writes them, so they stay finite and a step never needs to check them.
        size = self._owned.stop - self._owned.start
        self.m = _read_only(np.zeros(size, np.float32))   # first moment
        self.v = _read_only(np.zeros(size, np.float32))   # second moment
        self.step_count = 0
        self.rng = np.random.default_rng(self.config.seed)
        self.history = []        # metrics of every step taken
        self.eval_history = []
        self._events = Events(EVENTS)   # a listener's exception propagates out of the step/run
        self._stop_requested = False
        # weight decay on matrices only (not biases, layernorm gains or... position table)
        self._segments = shard_segments(model.param_offsets, self._owned)
        self._decay = np.array([len(shape) == 2 for _, shape in model.param_shapes])
        # ranks on one machine share its cores: by default each takes its share
        self.threads = dp.default_threads() if dp is not None else None

    # ----------------------------------------------------------------- threads
    @property
    def threads(self) -> int | Literal["auto"] | None:
        """Threads the kernels use: None (all, as Numba and BLAS are set up), an int, or
        "auto" (chosen by timing steps: explorer.train.thread_tuner.ThreadTuner, in self.thread_tuner)."""
        return self._threads

    @threads.setter
    def threads(self, value: int | Literal["auto"] | None) -> None:
        if value == "auto":
            self.thread_tuner = ThreadTuner()
        elif value is None or (isinstance(value, int) and not isinstance(value, bool)
                               and 1 <= value <= max_threads()):
            self.thread_tuner = None
        else:
            raise ValueError(f"threads must be None, \"auto\" or an integer from 1 to "
                             f"{max_threads()}, got {value!r}")
        self._threads = value

    def _step_threads(self):
        if self.thread_tuner is not None:
            return self.thread_tuner.next_threads()
        return self._threads

    # ----------------------------------------------------------------- events
    def on(self, event: str, callback: Callable[[dict], object]) -> Callable[[dict], object]:
        """Call callback(metrics: dict) when `event` happens: one of EVENTS. A listener that
        raises stops the run (the step it follows is taken: "step" comes after the update)."""
        return self._events.on(event, callback)

    def off(self, event: str, callback: Callable[[dict], object]) -> None:
        """Stop calling callback on `event` (ValueError if it was not subscribed)."""
        self._events.off(event, callback)

    # ----------------------------------------------------------------- one step
    def step(self) -> dict:
        """One training step; returns its metrics. Atomic: if anything raises inside it, the
        parameters, the optimizer state, the step count and the data sampler's random state
        are bitwise what they were before it (see `_guarded`)."""
        warmup.start(self.model)    # the first step in a fresh install: compile in two processes
        with self.model.lock, interrupts_deferred():
            rng_state = self.rng.bit_generator.state
            saved = self._guarded_state()
            threads = self._step_threads()
            try:
                with using_threads(threads) if threads else contextlib.nullcontext():
                    metrics = self._step()
            except BaseException:
                self.rng.bit_generator.state = rng_state
                if saved is not None:
                    self._put_back(saved)
                raise
            if threads:
                metrics["threads"] = threads
                if self.thread_tuner is not None:
                    self.thread_tuner.record(threads, metrics["ms"] / 1000)
            self.history.append(metrics)
            # still under the lock: listeners read the model's record of exactly this step
            self._events.emit("step", metrics)
        return metrics

    def _guarded_state(self):
        """A copy of what a step changes, taken only while some kernel is not the package's
        own: the shipped kernels write the parameters and moments only in the optimizer's
        single call, after every check has passed, so a failed step has nothing to undo.
        A student's kernel may write anywhere (a layernorm that zeroes its weight, then
        raises), so then we pay for a copy (see benchmarks/README, "Step guard")."""
        if not kernels.swapped():
            return None
        return self.model.flat_params.copy(), self.m.copy(), self.v.copy(), self.step_count

    def _put_back(self, saved):
        params, m, v, step_count = saved
        self.model.flat_params[...] = params
        with _writable(self.m, self.v):
            self.m[...] = m
            self.v[...] = v
        self.step_count = step_count

    def _step(self):
        model, cfg, dp = self.model, self.config, self.distributed
        t0 = time.perf_counter()
        draw = functools.partial(self.data.get_batch, "train", cfg.batch_size, self.seq_len, self.rng)
        if dp is None:
            x, y = draw()
            _, loss = model.forward(x, y)
            extra = {"tokens": x.size}
        else:   # every rank draws the whole batch, from the same stream, and computes its rows
            loss, extra = dp.gradients(model, draw, f"step {self.step_count + 1}")
        if not math.isfinite(loss):
            raise FloatingPointError(f"loss is {loss} at step {self.step_count}: not updating "
                                     f"(lower the learning rate, or check the last kernel you changed)")
        if dp is None:
            model.backward()
            norm = float(kernels.get("grad_norm")(model.flat_grads))
        else:
            norm = dp.global_norm(model.flat_grads, kernels.get("grad_norm"),
                                  f"step {self.step_count + 1}: the gradient norm")
        if not math.isfinite(norm):
            raise FloatingPointError(f"gradient norm is {norm} at step {self.step_count}: not updating")
        lr = learning_rate(self.step_count, cfg)
        self._update(lr, clip_scale(norm, cfg.grad_clip))
        self.step_count += 1
        seconds = time.perf_counter() - t0
        tokens = extra.pop("tokens")
        return {"step": self.step_count, "loss": loss, "lr": lr, "grad_norm": norm,
                "ms": 1000 * seconds, "tokens_per_s": tokens / seconds, **extra}

    def _update(self, lr, grad_scale):
        """AdamW on the flat buffers, in one kernel call, then a check that every parameter
        is still finite. With finite gradients (the norm is checked) and finite moments
        (only this call writes them; restore() refuses non-finite ones), only a learning
        rate large enough to overflow float32 can fail it."""
        model, cfg, dp = self.model, self.config, self.distributed
        own = self._owned
        args = (model.flat_params[own], model.flat_grads[own], self.m, self.v, self._segments,
                self._decay, self.step_count + 1, lr, cfg.beta1, cfg.beta2, cfg.eps,
                cfg.weight_decay, grad_scale)
        def update():
            with _writable(self.m, self.v):
                kernels.get("adamw_update")(*args)

        if dp is None or not dp.zero:
            update()
            bad = count_nonfinite(model.flat_params)
        else:   # ZeRO-1: each rank updates its slice, then they share them
            bad = dp.sharded_update(update, lambda: count_nonfinite(model.flat_params[own]),
                                    model.flat_params, f"step {self.step_count + 1}: AdamW")
        if bad:
            which = "" if kernels.swapped() else " (lr is too large for float32)"
            raise FloatingPointError(f"adamw_update made {bad} parameters NaN or Inf at step "
                                     f"{self.step_count}{which}: not updating")

    def reset(self, seed: int | None = None) -> int:
        """Back to step 0: fresh weights from `seed` (default: the config's), zero optimizer
        state, the data sampler restarted, the history cleared."""
        with self.model.lock:
            if seed is not None:
                _integer("seed", seed, 0)
                self.config.seed = int(seed)
            seed = self.config.seed
            self.model.init_weights(seed)
            self.model.flat_grads[...] = 0.0
            with _writable(self.m, self.v):
                self.m[...] = 0.0
                self.v[...] = 0.0
            self.step_count = 0
            self.rng.bit_generator.state = np.random.default_rng(seed).bit_generator.state
            self.history.clear()
            self.eval_history.clear()
        return seed

    # ----------------------------------------------------------------- loops
    def evaluate(self, batches: int | None = None) -> dict:
        """Mean validation loss over `batches` batches (and task metrics, if the data has them).
        Uses its own random stream, so evaluating does not change the training batches."""
        batches = batches or self.config.eval_batches
        rng = np.random.default_rng([self.config.seed, self.step_count, 1])
        threads = self.thread_tuner.choice if self.thread_tuner is not None else self._threads
        with self.model.lock, using_threads(threads) if threads else contextlib.nullcontext():
            draw = functools.partial(self.data.get_batch, "val", self.config.batch_size, self.seq_len, rng)
            if self.distributed is None:
                losses = [self.model.forward(*draw())[1] for _ in range(batches)]
            else:
                losses = self.distributed.mean_losses(self.model, draw, batches,
                                                      f"evaluating at step {self.step_count}")
            result = {"step": self.step_count, "val_loss": float(np.mean(losses))}
            if hasattr(self.data, "evaluate"):
                result.update(self.data.evaluate(self.model, rng))
        self.eval_history.append(result)
        self._events.emit("eval", result)
        return result

    def run(self, steps: int) -> dict | None:
        """Take `steps` steps (fewer if stop() is called), validating every eval_interval."""
        _integer("steps", steps, 0)
        self._stop_requested = False
        self._events.emit("run_start", {"step": self.step_count, "steps": steps})
        try:
            for _ in range(steps):
                if self._stop_requested:
                    break
                self.step()
                every = self.config.eval_interval
                if every and self.step_count % every == 0:
                    self.evaluate()
        finally:
            self._events.emit("run_end", {"step": self.step_count})
        return self.history[-1] if self.history else None

    def stop(self) -> None:
        """Ask a running run() to stop after the step in progress (safe from any thread)."""
        self._stop_requested = True

    # ----------------------------------------------------------------- checkpoints
    def checkpoint_state(self) -> tuple[dict[str, np.ndarray], dict]:
        """(arrays, metadata) that, with the model, restore this trainer exactly. Under ZeRO-1
        every rank must call it (it gathers the shards of m and v): rank 0 gets them whole,
        the others get no arrays (rank 0 writes the checkpoints)."""
        arrays = {"adamw.m": self.m, "adamw.v": self.v}
        dp = self.distributed
        if dp is not None and dp.zero:
            with self.model.lock:
                m = dp.gather_shards(self.m, "gathering AdamW's m for a checkpoint")
                v = dp.gather_shards(self.v, "gathering AdamW's v for a checkpoint")
            arrays = {"adamw.m": m, "adamw.v": v} if dp.rank == 0 else {}
        meta = {"step": self.step_count, "train_config": asdict(self.config),
                "rng_state": _jsonable_rng_state(self.rng.bit_generator.state)}
        return arrays, meta

    def restore_state(self, arrays: dict[str, np.ndarray], meta: dict,
                      source: str = "the checkpoint") -> None:
        """Put saved optimizer state back. Everything is checked before anything is written,
        so a bad state raises (naming `source` and what is wrong) and leaves this trainer as
        it was."""
        state = self.check_state(arrays, meta, source)
        self.put_state(state)

    def check_state(self, arrays: dict[str, np.ndarray], meta: dict,
                    source: str = "the checkpoint") -> TrainerState:
        """Validate (arrays, meta) from checkpoint_state(), writing nothing; returns the state
        that put_state() writes (Checkpoint.restore checks everything before writing any)."""
        moments = []
        whole = (self.model.num_params,)   # saved whole, whatever the ranks and shards
        for key in ("adamw.m", "adamw.v"):
            if key not in arrays:
                raise ValueError(f"{source} has no optimizer array {key!r} (was it saved from a "
                                 f"bare model? explorer.load(...).model holds the weights alone)")
            array = np.asarray(arrays[key])
            if array.shape != whole:
                raise ValueError(f"{source}: optimizer array {key!r} has shape {array.shape}; "
                                 f"this model needs {whole}")
            if not np.issubdtype(array.dtype, np.floating):
                raise ValueError(f"{source}: optimizer array {key!r} has dtype {array.dtype}, "
                                 f"expected float32")
            bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
            if bad:
                raise ValueError(f"{source}: optimizer array {key!r} holds {bad} NaN or Inf "
                                 f"values; refusing to train from it")
            moments.append(array)
        if not isinstance(meta, dict):
            raise ValueError(f"{source}: the trainer's metadata should be a dict, got "
                             f"{type(meta).__name__}")
        step = meta.get("step", 0)
        if not isinstance(step, (int, np.integer)) or isinstance(step, bool) or step < 0:
            raise ValueError(f"{source}: step should be an integer >= 0, got {step!r}")
        rng = None
        if "rng_state" in meta:
            rng = np.random.default_rng()
            try:
                rng.bit_generator.state = meta["rng_state"]
            except (TypeError, ValueError, KeyError) as err:
                raise ValueError(f"{source}: rng_state is not a valid numpy "
                                 f"{type(rng.bit_generator).__name__} state ({err}): "
                                 f"{meta['rng_state']!r:.120}") from None
        return moments[0], moments[1], int(step), rng

    def put_state(self, state: TrainerState) -> None:
        """Write a state that check_state() returned (nothing is checked again)."""
        m, v, step, rng = state
        with _writable(self.m, self.v):
            self.m[...] = m[self._owned]      # under ZeRO-1 this rank's slice only
            self.v[...] = v[self._owned]
        self.step_count = step
        if rng is not None:
            self.rng.bit_generator.state = rng.bit_generator.state


def _jsonable_rng_state(state):
    """numpy's PCG64 state is ints and strings already; make sure nothing else sneaks in."""
    return {k: (_jsonable_rng_state(v) if isinstance(v, dict) else (int(v) if isinstance(v, (np.integer,)) else v))
            for k, v in state.items()}


def _read_only(array):
    array.flags.writeable = False
    return array


@contextlib.contextmanager
def _writable(*arrays):
    """Let the trainer itself write its read-only arrays inside the block."""
    for a in arrays:
        a.flags.writeable = True
    try:
        yield
    finally:
        for a in arrays:
            a.flags.writeable = False


@contextlib.contextmanager
def interrupts_deferred():
    """Hold a Ctrl-C (SIGINT) that arrives during the block until the block ends, so a step
    is never cut between writing the parameters and counting the step. Only in the main
    thread (the only one Python delivers signals to), and only while Python's own handler
    is installed: a program that set its own handler keeps it.

    Yields the list of signals caught so far: a caller that acts on one itself (ranks that
    must stop at the same step) empties it, and then nothing is raised."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield []
        return
    caught = []
    signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield caught
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if caught:
        raise KeyboardInterrupt
