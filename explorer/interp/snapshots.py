"""What the attention explorer keeps while a model trains: attention maps of one probe prompt.

    probe = AttentionProbe(model, ids)        # ids: the probe prompt's token ids, (T,)
    att = probe.attention()                   # (n_layer, n_head, T, T), a fresh copy
    history = SnapshotHistory(every=10, capacity=64)
    if history.due(step): history.add(step, probe.attention())

Why a shadow model: model.forward overwrites model.acts and model.trace, which other views
(the step-through, gradient flow) read as "the last training step". The probe runs on a second
GPT of the same shape instead, whose parameters are copied from the live one just before each
probe (np.copyto into its flat buffer: every parameter is a view of that buffer). The live
model's record stays exactly as training left it. The cost is one more copy of the parameters
and a small set of activation buffers (batch 1, T tokens).
"""
import numpy as np

from ..model.gpt import GPT
from .cache import cache_activations


class AttentionProbe:
    """Attention probabilities of a fixed prompt under the current parameters of `model`."""

    def __init__(self, model: GPT, ids: np.ndarray):
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids.size == 0:
            raise ValueError("the probe prompt is empty: it needs at least one token")
        self.model = model
        self.ids = ids
        # same shape as the live model; its own initial weights are overwritten before each use
        self.shadow = GPT(model.config)

    @property
    def num_tokens(self) -> int:
        return len(self.ids)

    def attention(self) -> np.ndarray:
        """(n_layer, n_head, T, T) float32: row t of [l, h] is where query t looks (sums to 1;
        zero above the diagonal, where the causal mask forbids looking ahead)."""
        names = [f"blocks.{l}.attn.att" for l in range(self.model.config.n_layer)]
        # under the lock: a training step on another thread cannot change the parameters
        # half way through the copy (the lock is re-entrant: the forward takes it again)
        with self.model.lock:
            np.copyto(self.shadow.flat_params, self.model.flat_params)
            cache = cache_activations(self.shadow, self.ids[None, :], names=names)
        return cache.layers("attn.att")[:, 0]


class SnapshotHistory:
    """Snapshots taken every `every` steps, at most `capacity` of them.

    When full, every other snapshot is dropped and the interval doubles, so the kept ones stay
    evenly spaced over the whole run (a 10,000-step run keeps `capacity` maps, not 1,000)."""

    def __init__(self, every: int = 10, capacity: int = 64):
        if not isinstance(every, (int, np.integer)) or every < 1:
            raise ValueError(f"snapshot interval must be a positive number of steps, got {every!r}")
        if not isinstance(capacity, (int, np.integer)) or capacity < 2:
            raise ValueError(f"snapshot capacity must be an integer >= 2, got {capacity!r}")
        self.every = self.initial_every = int(every)
        self.capacity = int(capacity)
        self.steps = []
        self.values = []
        self._start = None   # the step of the first snapshot: intervals count from it

    def __len__(self) -> int:
        return len(self.steps)

    def due(self, step: int) -> bool:
        """True when a snapshot at `step` belongs in the history."""
        if self._start is None:
            return True
        if self.steps and step <= self.steps[-1]:
            return False
        return (step - self._start) % self.every == 0

    def add(self, step: int, value: object, force: bool = False) -> bool:
        """Keep `value` as the snapshot of `step` if it is due (still due after thinning);
        force=True keeps any step newer than the last (a snapshot asked for by hand)."""
        if not (self.due(step) or (force and (not self.steps or step > self.steps[-1]))):
            return False
        if self._start is None:
            self._start = step
        if len(self.steps) >= self.capacity:
            self._thin()
            if not (force or self.due(step)):
                return False
        self.steps.append(int(step))
        self.values.append(value)
        return True

    def replace_last(self, step: int, value: object) -> bool:
        """Overwrite the newest snapshot (e.g. a refresh at a step that already has one)."""
        if not self.steps:
            return self.add(step, value)
        self.steps[-1], self.values[-1] = int(step), value
        return True

    def _thin(self) -> None:
        # keep snapshots 0, 2, 4, ...: they are exactly the multiples of the doubled interval
        self.steps = self.steps[::2]
        self.values = self.values[::2]
        self.every *= 2

    def clear(self) -> None:
        """Forget every snapshot and start again at the first interval."""
        self.steps, self.values, self._start = [], [], None
        self.every = self.initial_every
