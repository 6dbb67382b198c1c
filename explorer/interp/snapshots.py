"""What the attention explorer keeps while a model trains: attention maps of one probe prompt.

    probe = AttentionProbe(model, ids)        # ids: the probe prompt's token ids, (T,)
    record = probe.record()                   # queries and keys of every layer (compact)
    record.head(3, 5)                         # (T, T): layer 3, head 5, computed on demand
    record.layer(3)                           # (n_head, T, T)
    att = probe.attention()                   # (n_layer, n_head, T, T), a fresh copy
    history = SnapshotHistory(every=10, capacity=64)
    if history.due(step): history.add(step, probe.record())

Why a record of queries and keys rather than the maps: every map of GPT-2 small at T=1024 is
12 x 12 x 1024^2 float32, 600 MB. The queries and keys of every layer are 12 x 1024 x 1536
float32, 75 MB, and any one head's map follows from them in milliseconds through the
registry's own attention kernel (the one the model ran: no second copy of the math).

Why a shadow model: model.forward overwrites model.acts and model.trace, which other views
(the step-through, gradient flow) read as "the last training step". The probe runs on a second
GPT of the same shape instead, whose parameters are copied from the live one just before each
probe (np.copyto into its flat buffer: every parameter is a view of that buffer). The live
model's record stays exactly as training left it. The cost is one more copy of the parameters
and a small set of activation buffers (batch 1, T tokens): for a model that is not training
(e.g. GPT-2 opened to explore), AttentionProbe(model, ids, shadow=False) probes the model
itself and saves that copy (500 MB for GPT-2 small).
"""
import numpy as np

from ..kernels import get as registered_kernel
from ..kernels.runtime import compute_lock
from ..model.gpt import GPT
from .cache import cache_activations


class AttentionRecord:
    """The queries and keys of every layer for one prompt: any head's map on demand.

    qk: (n_layer, T, 2C) float32, each layer's qkv activation without its values (attention
    probabilities depend on q and k only). Maps are computed by the attention kernel
    registered now (`kernels.get("attention_forward")`), under the compute lock."""

    def __init__(self, qk: np.ndarray, n_head: int):
        qk = np.ascontiguousarray(qk, dtype=np.float32)
        if qk.ndim != 3 or qk.shape[2] % (2 * n_head):
            raise ValueError(f"qk must be (n_layer, T, 2C) with C a multiple of n_head={n_head}, "
                             f"got shape {qk.shape}")
        self.qk, self.n_head = qk, int(n_head)
        self.n_layer, self.num_tokens = qk.shape[0], qk.shape[1]
        self.n_embd = qk.shape[2] // 2

    @property
    def nbytes(self) -> int:
        return self.qk.nbytes

    def _check(self, layer, head=0):
        if not 0 <= layer < self.n_layer:
            raise IndexError(f"layer {layer} out of range: the model has {self.n_layer} layers "
                             f"(0..{self.n_layer - 1})")
        if not 0 <= head < self.n_head:
            raise IndexError(f"head {head} out of range: each layer has {self.n_head} heads "
                             f"(0..{self.n_head - 1})")

    def _run(self, qkv, n_head):
        """att (n_head, T, T) of qkv (1, T, 3 * channels), through the registered kernel."""
        T = self.num_tokens
        out = np.empty((1, T, qkv.shape[2] // 3), np.float32)   # (1, T, channels), unused
        preatt = np.empty((1, n_head, T, T), np.float32)
        att = np.empty((1, n_head, T, T), np.float32)
        with compute_lock:   # as model.lock: a training thread may run Numba too
            registered_kernel("attention_forward")(out, preatt, att, qkv, n_head)
        return att[0]

    def head(self, layer: int, head: int) -> np.ndarray:
        """(T, T) float32: row t is where query t of `layer`, `head` looks (sums to 1)."""
        self._check(layer, head)
        C, hs = self.n_embd, self.n_embd // self.n_head
        qkv = np.zeros((1, self.num_tokens, 3 * hs), np.float32)   # values stay 0: unused
        qkv[0, :, :hs] = self.qk[layer, :, head * hs:(head + 1) * hs]
        qkv[0, :, hs:2 * hs] = self.qk[layer, :, C + head * hs:C + (head + 1) * hs]
        return self._run(qkv, 1)[0]

    def layer(self, layer: int) -> np.ndarray:
        """(n_head, T, T) float32: every head of `layer`."""
        self._check(layer)
        qkv = np.zeros((1, self.num_tokens, 3 * self.n_embd), np.float32)
        qkv[0, :, :2 * self.n_embd] = self.qk[layer]
        return self._run(qkv, self.n_head)

    def all(self) -> np.ndarray:
        """(n_layer, n_head, T, T) float32: every map (n_layer * n_head * T^2 floats)."""
        return np.stack([self.layer(l) for l in range(self.n_layer)])


class AttentionProbe:
    """Attention probabilities of a fixed prompt under the current parameters of `model`."""

    def __init__(self, model: GPT, ids: np.ndarray, shadow: bool = True):
        """shadow=False runs the probe on `model` itself (its record of the last forward is
        overwritten): for a model that is not training, saving a copy of its parameters."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids.size == 0:
            raise ValueError("the probe prompt is empty: it needs at least one token")
        if ids.size > model.config.block_size:
            raise ValueError(f"the probe prompt has {ids.size} tokens, more than the model's "
                             f"block_size={model.config.block_size}")
        self.model = model
        self.ids = ids
        # same shape as the live model; its own initial weights are overwritten before each use
        self.shadow = GPT(model.config) if shadow else None

    @property
    def num_tokens(self) -> int:
        return len(self.ids)

    def record(self) -> AttentionRecord:
        """The queries and keys of every layer under the current parameters."""
        cfg = self.model.config
        names = [f"blocks.{l}.attn.qkv" for l in range(cfg.n_layer)]
        # under the lock: a training step on another thread cannot change the parameters
        # half way through the copy (the lock is re-entrant: the forward takes it again)
        with self.model.lock:
            if self.shadow is not None:
                np.copyto(self.shadow.flat_params, self.model.flat_params)
            cache = cache_activations(self.shadow or self.model, self.ids[None, :], names=names)
        qk = np.stack([cache.pop(name)[0, :, :2 * cfg.n_embd] for name in names])
        return AttentionRecord(qk, cfg.n_head)

    def attention(self) -> np.ndarray:
        """(n_layer, n_head, T, T) float32: row t of [l, h] is where query t looks (sums to 1;
        zero above the diagonal, where the causal mask forbids looking ahead)."""
        return self.record().all()


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
