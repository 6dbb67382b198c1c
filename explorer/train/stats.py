"""Training-health statistics in plain NumPy: what the gradient-flow view plots.

    recorder = GradientRecorder(trainer)       # subscribes to the trainer's "step" events
    trainer.run(100)
    recorder.steps                             # [1, 2, ..., 100] (thinned when history is full)
    recorder.series("grad_norm")               # (steps, parameters) array
    recorder.layer_grad_norms()                # {"embedding": (steps,), "layer 0": ..., "final": ...}
    recorder.on("record", callback)            # callback(recorder) after each new record

Per recorded step it keeps, for every parameter, the gradient norm ||dL/dp|| (before
clipping) and the update-to-data ratio ||p_after - p_before|| / ||p_before||; per layer, the
residual stream's std and its gradient's std, GELU saturation, layernorm input statistics,
and histograms (fixed bins) of a few activations and their gradients.

Memory: history is bounded by `max_steps_kept` records. When it is full, every other record is
dropped and the recording stride doubles, so the kept steps stay evenly spaced from the first
step to the latest. To measure the update it keeps one copy of the flat parameter buffer
(4 bytes per parameter: 0.4 MB for a 100k-parameter toy model, 0.5 GB for GPT-2 124M), refreshed
only on the step just before a recorded one.
"""
import re
import threading

import numpy as np

from .events import Events

# Block tensors whose values (model.acts) and gradients (model.grad_acts) get histograms.
HIST_TENSORS = ("residual2", "attn.out", "mlp.fc", "mlp.gelu")
# Fixed bins, so histograms of different steps can be compared. Values past the ends are
# counted in the first/last bin: every element is counted.
ACT_EDGES = np.linspace(-5.0, 5.0, 51)          # activation value
GRAD_EXPONENTS = (-34, 0)   # |gradient| in bins of a factor 2, from 2^-34 (~6e-11) up to 1
# GELU: for |x| > 3 it is flat (x < -3: output > -0.004, slope within 0.012 of 0) or the
# identity (x > 3): either way the non-linearity does nothing there.
SATURATION = 3.0
# What a GradientRecorder tells its listeners about: "record", after each new record.
RECORDER_EVENTS = ("record",)

# ----------------------------------------------------------------------------- pure functions


def gelu(x):
    """GPT-2's GELU (tanh approximation), in float64."""
    x = np.asarray(x, dtype=np.float64)
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


def saturated_fraction(gelu_inputs, threshold=SATURATION):
    """Fraction of GELU inputs x with |x| > threshold (GELU acts as 0 or as the identity there)."""
    x = np.asarray(gelu_inputs)
    return float(np.count_nonzero(np.abs(x) > threshold)) / max(x.size, 1)


def dead_fraction(gelu_inputs, threshold=SATURATION):
    """Fraction of GELU inputs x < -threshold: the output is ~0 and almost no gradient flows back."""
    x = np.asarray(gelu_inputs)
    return float(np.count_nonzero(x < -threshold)) / max(x.size, 1)


def dead_unit_fraction(gelu_inputs, threshold=SATURATION):
    """Fraction of hidden units (last axis) whose input is < -threshold at every position of
    the batch: such a unit's fc weights got no gradient at all this step."""
    x = np.asarray(gelu_inputs)
    per_unit = x.reshape(-1, x.shape[-1]).max(axis=0)
    return float(np.count_nonzero(per_unit < -threshold)) / max(per_unit.size, 1)


def histogram_counts(values, edges):
    """Counts of `values` in the uniform bins `edges` (len(edges) - 1 bins, as np.histogram's);
    values below or above the range count in the first or last bin (NaN in the first), so
    counts.sum() == values.size. One pass of float32 arithmetic and a bincount (~1 ms per
    quarter million values here; np.histogram took 4x longer)."""
    edges = np.asarray(edges, dtype=np.float64)
    n_bins = len(edges) - 1
    if n_bins < 1:
        raise ValueError(f"histogram needs at least 2 edges, got {len(edges)}")
    # bin index = floor((x - lo) / width), clamped into [0, n_bins - 1]
    t = np.subtract(np.ravel(values), np.float32(edges[0]), dtype=np.float32)
    t *= np.float32(n_bins / (edges[-1] - edges[0]))
    np.fmax(t, 0, out=t)                    # fmax/fmin, unlike clip, turn NaN into the bound
    np.fmin(t, n_bins - 1, out=t)
    return np.bincount(t.astype(np.intp), minlength=n_bins)


def log2_histogram_counts(values, exponents=GRAD_EXPONENTS):
    """Counts of |values| by power of two: bin k counts 2^(lo+k) <= |x| < 2^(lo+k+1) for
    (lo, hi) = exponents, so there are hi - lo bins, each spanning a factor of 2. Smaller values
    (and exact zeros) count in the first bin, larger ones (and inf/NaN) in the last.

    A float32 stores |x| = 1.m * 2^(E - 127) with the 8-bit exponent E in bits 23..30, so the
    bin comes straight from the bits: no logarithm needed (5x faster than np.log2 here)."""
    lo, hi = exponents
    if hi <= lo:
        raise ValueError(f"exponents must be (lo, hi) with lo < hi, got {exponents}")
    bits = np.ascontiguousarray(values, dtype=np.float32).ravel().view(np.int32)
    e = np.right_shift(bits, 23)
    e &= 0xFF                               # drop the sign bit: E, the biased exponent
    np.clip(e, lo + 127, hi - 1 + 127, out=e)
    e -= lo + 127
    return np.bincount(e, minlength=hi - lo)


def log2_edges_as_log10(exponents=GRAD_EXPONENTS):
    """The power-of-two bins' edges on a log10 axis (for plotting): log10(2^e) = e log10(2)."""
    lo, hi = exponents
    return np.arange(lo, hi + 1) * np.log10(2.0)


def segment_norms(flat, offsets):
    """L2 norm of each segment flat[offsets[i]:offsets[i+1]] (one per parameter), in float64."""
    sq = np.square(flat, dtype=np.float64)
    return np.sqrt(np.add.reduceat(sq, offsets[:-1]))


def update_to_data_ratio(before, after, offsets):
    """Per parameter: ||after - before|| / ||before||, the fraction by which a step moved it.
    About 1e-3 is the usual healthy size; NaN where the parameter was all zeros before."""
    change = segment_norms(after.astype(np.float64) - before, offsets)
    size = segment_norms(before, offsets)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(size > 0, change / size, np.nan)


def param_group(name):
    """Which layer a parameter belongs to: 'embedding', 'layer <l>' or 'final'."""
    m = re.match(r"blocks\.(\d+)\.", name)
    if m:
        return f"layer {m.group(1)}"
    return "embedding" if name in ("wte", "wpe") else "final"


def layernorm_names(n_layer):
    return [f"blocks.{l}.{ln}" for l in range(n_layer) for ln in ("ln1", "ln2")] + ["ln_f"]


def activation_stats(acts, grad_acts, n_layer):
    """Per-layer summaries of one forward/backward: {name: 1-D float array}.

    residual_std / residual_grad_std: (n_layer + 1,) std of the residual stream (and of its
      gradient) after the embedding and after each block.
    gelu_saturated / gelu_dead / gelu_dead_units: (n_layer,) see the functions above.
    ln_mean_abs / ln_std: (2 n_layer + 1,) mean over positions of |mean| and of the std of each
      layernorm's input vectors (std = 1/rstd, what the layernorm divides by)."""
    stream = ["encoded"] + [f"blocks.{l}.residual2" for l in range(n_layer)]
    fc = [acts[f"blocks.{l}.mlp.fc"] for l in range(n_layer)]
    lns = layernorm_names(n_layer)
    return {
        "residual_std": np.array([acts[n].std(dtype=np.float64) for n in stream]),
        "residual_grad_std": np.array([grad_acts[n].std(dtype=np.float64) for n in stream]),
        "gelu_saturated": np.array([saturated_fraction(x) for x in fc]),
        "gelu_dead": np.array([dead_fraction(x) for x in fc]),
        "gelu_dead_units": np.array([dead_unit_fraction(x) for x in fc]),
        "ln_mean_abs": np.array([np.abs(acts[n + ".mean"]).mean(dtype=np.float64) for n in lns]),
        "ln_std": np.array([(1.0 / acts[n + ".rstd"].astype(np.float64)).mean() for n in lns]),
    }


def layer_histograms(acts, grad_acts, n_layer, act_edges=ACT_EDGES, grad_exponents=GRAD_EXPONENTS):
    """{tensor: (n_layer, bins) counts} of the values (first dict, bins act_edges) and of
    |gradient| (second dict, power-of-two bins) of each HIST_TENSORS tensor in every block."""
    act_h, grad_h = {}, {}
    for t in HIST_TENSORS:
        names = [f"blocks.{l}.{t}" for l in range(n_layer)]
        act_h[t] = np.stack([histogram_counts(acts[n], act_edges) for n in names])
        grad_h[t] = np.stack([log2_histogram_counts(grad_acts[n], grad_exponents) for n in names])
    return act_h, grad_h


# ----------------------------------------------------------------------------- the recorder


def _has_backward(model):
    """Did the model's last pass include a backward (so acts and grad_acts belong together)?"""
    return bool(model.grad_acts) and any(op.phase == "backward" for op in model.trace)


class History:
    """Evenly spaced records of a run, at most `max_kept` of them: when full, every other
    record is dropped and the stride doubles, so the records always span the whole run with
    bounded memory (a 10,000-step run keeps between max_kept/2 and max_kept records)."""

    def __init__(self, stride, max_kept):
        if max_kept < 2:
            raise ValueError(f"a history must keep at least 2 records, got max_kept={max_kept!r}")
        self.first_stride = self.stride = int(stride)
        self.max_kept = int(max_kept)
        self.clear()

    def clear(self):
        self.steps, self.records = [], []
        self.stride, self.next_due = self.first_stride, 0

    def due(self, step):
        return step >= self.next_due

    def add(self, step, record):
        self.steps.append(step)
        self.records.append(record)
        self.next_due = step + self.stride
        if len(self.steps) > self.max_kept:
            self.steps, self.records = self.steps[::2], self.records[::2]
            self.stride *= 2
            self.next_due = self.steps[-1] + self.stride

    def stacked(self, name):
        """(records, ...) array of record[name] over the kept records."""
        values = [r[name] for r in self.records]
        return np.stack(values) if values else np.zeros((0, 0))


class GradientRecorder:
    """Records gradient and activation health after training steps (see the module docstring).

    GradientRecorder(trainer): records on the trainer's "step" events, every `every` steps;
      histograms (the costly part: ~13 ms for the reverse-tiny model, about one step) only
      every `hist_every` records.
    GradientRecorder(model): no trainer; call record() yourself after model.backward()
      (the update-to-data ratio is then NaN: there was no update to measure).

    The event comes right after the step, on the training thread; a forward pass run on another
    thread in between (e.g. an attention view) would be recorded instead of the step's."""

    SERIES = ("grad_norm", "update_ratio", "residual_std", "residual_grad_std", "gelu_saturated",
              "gelu_dead", "gelu_dead_units", "ln_mean_abs", "ln_std")

    def __init__(self, source, every=1, max_steps_kept=256, hist_every=10):
        for name, value in (("every", every), ("hist_every", hist_every)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer (a number of steps), got {value!r}")
        self.trainer = source if hasattr(source, "model") and hasattr(source, "on") else None
        self.model = self.trainer.model if self.trainer else source
        if not hasattr(self.model, "flat_params"):
            raise TypeError(f"GradientRecorder needs a Trainer or a GPT model, got {type(source).__name__}")
        self.param_names = [name for name, _ in self.model.param_shapes]
        self.param_groups = [param_group(n) for n in self.param_names]
        self.ln_names = layernorm_names(self.model.config.n_layer)
        self.series_history = History(every, max_steps_kept)
        self.hist_history = History(every * hist_every, max_steps_kept)
        self._lock = threading.Lock()       # guards the histories: views read them from other threads
        self._events = Events(RECORDER_EVENTS)   # a listener's exception propagates out of record()
        self._prev_params, self._prev_step = None, None
        self.skipped = 0                    # steps not recorded: another forward ran before we could
        if self.trainer is not None:
            self._keep_params(self.trainer.step_count)
            self.trainer.on("step", self._on_step)

    @property
    def steps(self):
        return list(self.series_history.steps)

    @property
    def hist_steps(self):
        return list(self.hist_history.steps)

    # ------------------------------------------------------------------ subscription
    def on(self, event, callback):
        """on("record", callback): call callback(recorder) after each new record (on the thread
        that recorded it)."""
        return self._events.on(event, callback)

    def listeners(self, event):
        """The callbacks subscribed to `event` (see explorer.train.events.Events.listeners)."""
        return self._events.listeners(event)

    def off(self, event, callback):
        """Stop calling callback on `event` (ValueError if it was not subscribed)."""
        self._events.off(event, callback)

    def close(self):
        """Stop recording (unsubscribe from the trainer) and free the parameter copy."""
        if self.trainer is not None:
            try:
                self.trainer.off("step", self._on_step)
            except ValueError:
                pass                        # closed already
        self._prev_params = None

    def clear(self):
        """Forget all records."""
        with self._lock:
            self.series_history.clear()
            self.hist_history.clear()

    def _keep_params(self, step):
        """Copy the parameters as they are after `step` steps: the "before" of step + 1."""
        if self._prev_params is None:
            self._prev_params = self.model.flat_params.copy()
        else:
            self._prev_params[...] = self.model.flat_params
        self._prev_step = step

    def _on_step(self, metrics):
        step = int(metrics["step"])
        last = self.series_history.steps[-1] if self.series_history.steps else -1
        if step <= last:
            self.clear()                    # the trainer went back (reset, checkpoint): a new run
        series, hists = self.series_history.due(step), self.hist_history.due(step)
        if not _has_backward(self.model):   # another pass ran after the step: nothing to read
            self.skipped += 1
        elif series or hists:
            self.record(step, series=series, histograms=hists)
        if self.series_history.due(step + 1):   # keep the next recorded step's "before"
            with self.model.lock:
                self._keep_params(step)

    # ------------------------------------------------------------------ recording
    def record(self, step=None, series=True, histograms=True):
        """Record the model's gradients and activations of its last forward/backward as `step`
        (default: the trainer's step count, or one past the last record)."""
        model = self.model
        if not _has_backward(model):
            raise RuntimeError("nothing to record: the model's last pass had no backward "
                               "(run model.forward(idx, targets) and model.backward() first)")
        if step is None:
            steps = self.series_history.steps
            step = self.trainer.step_count if self.trainer else (steps[-1] + 1 if steps else 0)
        n_layer = model.config.n_layer
        with model.lock:                    # nobody may overwrite the buffers while we read them
            entry = self._measure(step) if series else None
            hist = layer_histograms(model.acts, model.grad_acts, n_layer) if histograms else None
        with self._lock:
            if series:
                self.series_history.add(step, entry)
            if histograms:
                act_h, grad_h = ({k: v.astype(np.int32) for k, v in h.items()} for h in hist)
                self.hist_history.add(step, {"act": act_h, "grad": grad_h})
        self._events.emit("record", self)
        return entry

    def catch_up_histograms(self):
        """Record histograms of the trainer's last step if it has none yet: a view calls this
        when a run ends, so the histograms it shows are the final ones. True if it recorded."""
        if self.trainer is None or not _has_backward(self.model):
            return False
        step, done = self.trainer.step_count, self.hist_history.steps
        if step == 0 or (done and done[-1] >= step):
            return False
        self.record(step, series=False, histograms=True)
        return True

    def _measure(self, step):
        model, offsets = self.model, self.model.param_offsets
        entry = {"grad_norm": segment_norms(model.flat_grads, offsets)}
        if self._prev_params is not None and self._prev_step == step - 1:
            entry["update_ratio"] = update_to_data_ratio(self._prev_params, model.flat_params, offsets)
        else:                               # no copy of the parameters before this step
            entry["update_ratio"] = np.full(len(self.param_names), np.nan)
        entry.update(activation_stats(model.acts, model.grad_acts, model.config.n_layer))
        return entry

    # ------------------------------------------------------------------ reading
    def series(self, name):
        """(recorded steps, K) array of one quantity (K: parameters, layers or layernorms)."""
        return self.snapshot()[1][name] if name in self.SERIES else self._unknown(name)

    def _unknown(self, name):
        raise KeyError(f"unknown series {name!r}; recorded: {', '.join(self.SERIES)}")

    def snapshot(self):
        """(steps, {series: (steps, K) array}) read together, consistent while training records."""
        with self._lock:
            h = self.series_history
            return list(h.steps), {name: h.stacked(name) for name in self.SERIES}

    def latest_histograms(self):
        """(step, {tensor: (n_layer, bins)} of values, same of |gradients|) of the last
        histogram record, or None before the first one."""
        with self._lock:
            h = self.hist_history
            if not h.steps:
                return None
            return h.steps[-1], h.records[-1]["act"], h.records[-1]["grad"]

    def group_names(self):
        """Parameter groups in model order: embedding, layer 0..L-1, final."""
        return list(dict.fromkeys(self.param_groups))

    def layer_grad_norms(self, grad_norm=None):
        """{group: (steps,) norm of all the gradients of that layer's parameters together}."""
        g = self.series("grad_norm") if grad_norm is None else grad_norm
        groups = np.array(self.param_groups)
        return {name: (np.sqrt(np.sum(np.square(g[:, groups == name]), axis=1)) if g.size else np.zeros(0))
                for name in self.group_names()}

    def __repr__(self):
        where = f"a trainer at step {self.trainer.step_count}" if self.trainer else "a model"
        return (f"GradientRecorder({len(self.series_history.steps)} records of {where}, now every "
                f"{self.series_history.stride} step(s); {len(self.hist_history.steps)} histograms)")
