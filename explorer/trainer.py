"""The training loop: one atomic step at a time, with events that views subscribe to.

    trainer = Trainer(model, data, batch_size=32, lr=1e-3)
    trainer.on("step", lambda m: print(m["step"], m["loss"]))
    trainer.run(200)

A step is forward -> backward -> clip (global norm) -> AdamW. It is atomic: if anything
raises inside it (a bad batch, a student's kernel, a NaN loss), the parameters, the
optimizer state, the step counter and the data sampler are as they were before it.
"""
import contextlib
import math
import time
from dataclasses import asdict, dataclass

import numpy as np

from . import kernels
from ._runtime import compute_lock
from .threads import ThreadTuner, max_threads, using_threads
from .kernels.clip import clip_scale

EVENTS = ("step", "eval", "run_start", "run_end")


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
    grad_clip: float = 1.0         # max global grad norm; 0 or None turns clipping off
    seq_len: int | None = None     # T of the batches; None: the data's own or block_size
    eval_interval: int = 0         # validate every N steps during run(); 0: never
    eval_batches: int = 4
    seed: int = 0

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if self.warmup_steps < 0 or self.max_steps < 0:
            raise ValueError(f"warmup_steps and max_steps must be >= 0, got "
                             f"{self.warmup_steps} and {self.max_steps}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ValueError(f"betas must lie in [0, 1), got ({self.beta1}, {self.beta2})")


def learning_rate(step, cfg: TrainConfig):
    """Linear warmup, then cosine decay from lr to min_lr over max_steps (step counts from 0)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.max_steps <= cfg.warmup_steps:
        return cfg.lr
    progress = min(1.0, (step - cfg.warmup_steps) / (cfg.max_steps - cfg.warmup_steps))
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)


class Trainer:
    def __init__(self, model, data, batch_size=16, lr=1e-3, **options):
        self.model = model
        self.data = data
        self.config = TrainConfig(batch_size=batch_size, lr=lr, **options)
        vocab = getattr(data, "vocab_size", None)
        if vocab is not None and vocab > model.config.vocab_size:
            raise ValueError(f"the data has {vocab} token ids but the model's vocab_size is "
                             f"{model.config.vocab_size}")
        self.seq_len = self.config.seq_len or getattr(data, "seq_len", None) or model.config.block_size
        if self.seq_len > model.config.block_size:
            raise ValueError(f"seq_len={self.seq_len} is longer than the model's block_size="
                             f"{model.config.block_size}")
        self.m = np.zeros_like(model.flat_params)   # AdamW first moment
        self.v = np.zeros_like(model.flat_params)   # AdamW second moment
        self.step_count = 0
        self.rng = np.random.default_rng(self.config.seed)
        self.history = []        # metrics of every step taken
        self.eval_history = []
        self._listeners = {e: [] for e in EVENTS}
        self._stop_requested = False
        # weight decay on matrices only (not biases, layernorm gains or... position table)
        self._segments = model.param_offsets
        self._decay = np.array([len(shape) == 2 for _, shape in model.param_shapes])
        self.threads = None

    # ----------------------------------------------------------------- threads
    @property
    def threads(self):
        """Threads the kernels use: None (all, as Numba and BLAS are set up), an int, or
        "auto" (chosen by timing steps: explorer.threads.ThreadTuner, in self.thread_tuner)."""
        return self._threads

    @threads.setter
    def threads(self, value):
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
    def on(self, event, callback):
        """Call callback(metrics: dict) when `event` happens: one of EVENTS."""
        if event not in self._listeners:
            raise ValueError(f"unknown event {event!r}; expected one of {EVENTS}")
        self._listeners[event].append(callback)
        return callback

    def off(self, event, callback):
        self._listeners[event].remove(callback)

    def _emit(self, event, payload):
        for callback in list(self._listeners[event]):
            callback(payload)

    # ----------------------------------------------------------------- one step
    def step(self):
        """One training step; returns its metrics. Atomic: on error nothing changes."""
        with compute_lock:
            rng_state = self.rng.bit_generator.state
            threads = self._step_threads()
            try:
                with using_threads(threads) if threads else contextlib.nullcontext():
                    metrics = self._step()
            except BaseException:
                self.rng.bit_generator.state = rng_state
                raise
            if threads:
                metrics["threads"] = threads
                if self.thread_tuner is not None:
                    self.thread_tuner.record(threads, metrics["ms"] / 1000)
            self.history.append(metrics)
            # still under the lock: listeners read the model's record of exactly this step
            self._emit("step", metrics)
        return metrics

    def _step(self):
        model, cfg = self.model, self.config
        t0 = time.perf_counter()
        x, y = self.data.get_batch("train", cfg.batch_size, self.seq_len, self.rng)
        _, loss = model.forward(x, y)
        if not math.isfinite(loss):
            raise FloatingPointError(f"loss is {loss} at step {self.step_count}: not updating "
                                     f"(lower the learning rate, or check the last kernel you changed)")
        model.backward()
        norm = float(kernels.get("grad_norm")(model.flat_grads))
        if not math.isfinite(norm):
            raise FloatingPointError(f"gradient norm is {norm} at step {self.step_count}: not updating")
        lr = learning_rate(self.step_count, cfg)
        self._update(lr, clip_scale(norm, cfg.grad_clip))
        self.step_count += 1
        seconds = time.perf_counter() - t0
        return {"step": self.step_count, "loss": loss, "lr": lr, "grad_norm": norm,
                "ms": 1000 * seconds, "tokens_per_s": x.size / seconds}

    def _update(self, lr, grad_scale):
        """AdamW on the flat buffers, in one kernel call. A student's kernel could fail half
        way, so for anything but the shipped kernel we keep a copy to roll back to."""
        model, cfg = self.model, self.config
        args = (model.flat_params, model.flat_grads, self.m, self.v, self._segments, self._decay,
                self.step_count + 1, lr, cfg.beta1, cfg.beta2, cfg.eps, cfg.weight_decay, grad_scale)
        if kernels.is_shipped("adamw_update"):
            kernels.get("adamw_update")(*args)
            return
        saved = model.flat_params.copy(), self.m.copy(), self.v.copy()
        try:
            kernels.get("adamw_update")(*args)
            if not np.isfinite(model.flat_params).all():
                raise FloatingPointError("adamw_update produced NaN or Inf parameters")
        except BaseException:
            model.flat_params[...], self.m[...], self.v[...] = saved
            raise

    # ----------------------------------------------------------------- loops
    def evaluate(self, batches=None):
        """Mean validation loss over `batches` batches (and task metrics, if the data has them).
        Uses its own random stream, so evaluating does not change the training batches."""
        batches = batches or self.config.eval_batches
        rng = np.random.default_rng([self.config.seed, self.step_count, 1])
        threads = self.thread_tuner.choice if self.thread_tuner is not None else self._threads
        with compute_lock, using_threads(threads) if threads else contextlib.nullcontext():
            losses = []
            for _ in range(batches):
                x, y = self.data.get_batch("val", self.config.batch_size, self.seq_len, rng)
                losses.append(self.model.forward(x, y)[1])
            result = {"step": self.step_count, "val_loss": float(np.mean(losses))}
            if hasattr(self.data, "evaluate"):
                result.update(self.data.evaluate(self.model, rng))
        self.eval_history.append(result)
        self._emit("eval", result)
        return result

    def run(self, steps):
        """Take `steps` steps (fewer if stop() is called), validating every eval_interval."""
        self._stop_requested = False
        self._emit("run_start", {"step": self.step_count, "steps": steps})
        try:
            for _ in range(steps):
                if self._stop_requested:
                    break
                self.step()
                every = self.config.eval_interval
                if every and self.step_count % every == 0:
                    self.evaluate()
        finally:
            self._emit("run_end", {"step": self.step_count})
        return self.history[-1] if self.history else None

    def stop(self):
        """Ask a running run() to stop after the step in progress (safe from any thread)."""
        self._stop_requested = True

    # ----------------------------------------------------------------- checkpoints
    def checkpoint_state(self):
        """(arrays, metadata) that, with the model, restore this trainer exactly."""
        arrays = {"adamw.m": self.m, "adamw.v": self.v}
        meta = {"step": self.step_count, "train_config": asdict(self.config),
                "rng_state": _jsonable_rng_state(self.rng.bit_generator.state)}
        return arrays, meta

    def restore_state(self, arrays, meta):
        for key, target in (("adamw.m", self.m), ("adamw.v", self.v)):
            if key not in arrays:
                raise ValueError(f"checkpoint has no optimizer array {key!r}")
            if arrays[key].shape != target.shape:
                raise ValueError(f"optimizer array {key!r} has shape {arrays[key].shape}; "
                                 f"this model needs {target.shape}")
        self.m[...] = arrays["adamw.m"]
        self.v[...] = arrays["adamw.v"]
        self.step_count = int(meta.get("step", 0))
        if "rng_state" in meta:
            self.rng.bit_generator.state = meta["rng_state"]


def _jsonable_rng_state(state):
    """numpy's PCG64 state is ints and strings already; make sure nothing else sneaks in."""
    return {k: (_jsonable_rng_state(v) if isinstance(v, dict) else (int(v) if isinstance(v, (np.integer,)) else v))
            for k, v in state.items()}
