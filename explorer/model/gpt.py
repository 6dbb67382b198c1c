"""GPT-2 in plain Python over named buffers; every op is a kernel looked up by name.

    model = GPT(GPTConfig(n_layer=4, n_head=4, n_embd=128, vocab_size=65, block_size=128))
    logits, loss = model.forward(idx, targets)   # idx, targets: int arrays (B, T)
    model.backward()                             # fills model.grads (same names as params)
    model.trace                                  # every op of the last forward and backward
    logits, acts = model.infer(idx, keep=["blocks.3.attn.att"])   # no backward: lean buffers

Architecture (GPT-2 exactly): token + learned position embedding; n_layer pre-LN blocks
    x = x + attn(ln1(x));  x = x + mlp(ln2(x))   with mlp = proj(gelu(fc(.)))
then a final layernorm and an LM head tied to the token embedding. It is written down once,
as a list of ops (model.ops, from architecture.py): forward walks it top to bottom, backward
bottom to top, and generation (generate.py) with a KV cache.
"""
import math
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from .. import kernels
from ..kernels.runtime import compute_lock
from .architecture import (
    LOSS,
    Grad,
    activation_shapes,
    block_input,
    block_span,
    gpt2_ops,
    gradient_shapes,
    last_reads,
)
from .config import GPTConfig, param_shapes

if TYPE_CHECKING:
    from .generate import Decoder


@dataclass
class OpRecord:
    """One op as the model ran it: which kernel, on which named tensors.

    `outputs` and `inputs` map argument names to the live arrays (overwritten by the next
    step: copy what you want to keep). For a backward op, `inverts` names the forward op
    whose gradient it computes."""
    phase: str                      # "forward" or "backward"
    name: str                       # e.g. "blocks.0.ln1"
    kernel: str                     # registry name, e.g. "layernorm_forward"
    outputs: dict
    inputs: dict
    inverts: str | None = None


class ScratchBuffers:
    """float32 buffers handed out by shape and given back for reuse, kept between calls; a
    call with other shapes (another B or T) frees those that no longer fit."""

    def __init__(self):
        self.free: dict[tuple[int, ...], list[np.ndarray]] = {}

    def take(self, shape):
        shape = tuple(shape)
        spare = self.free.get(shape)
        return spare.pop() if spare else np.empty(shape, np.float32)

    def give(self, array):
        self.free.setdefault(array.shape, []).append(array)

    def keep_only(self, shapes):
        """Free the spare buffers of any shape not among `shapes`."""
        wanted = {tuple(shape) for shape in shapes}
        self.free = {shape: arrays for shape, arrays in self.free.items() if shape in wanted}

    def nbytes(self) -> int:
        return sum(a.nbytes for arrays in self.free.values() for a in arrays)


class GPT:
    def __init__(self, config: GPTConfig, seed: int = 0, *, init: bool = True) -> None:
        """init=False leaves every parameter 0, for loaders that overwrite them all: it skips
        drawing the random weights (seconds for GPT-2 XL) and their float64 temporaries."""
        if not isinstance(config, GPTConfig):
            raise TypeError(f"GPT expects a GPTConfig, got {type(config).__name__}")
        self.config = config
        self.param_shapes = param_shapes(config)
        self.ops = gpt2_ops(config)   # the architecture: every op of the forward pass, in order
        sizes = [math.prod(shape) for _, shape in self.param_shapes]
        self.num_params = sum(sizes)
        self.param_offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        # one flat buffer each, so the optimizer and the checkpoint see a single array
        self.flat_params = np.zeros(self.num_params, dtype=np.float32)
        self.flat_grads = np.zeros(self.num_params, dtype=np.float32)
        self.params = self._views(self.flat_params)
        self.grads = self._views(self.flat_grads)
        self.acts = {}        # activation name -> array, from the last forward
        self.grad_acts = {}   # activation name -> d loss / d activation, from the last backward
        self.trace = []       # [OpRecord] of the last forward, then its backward
        # activation name -> fn(array), called by forward right after the op that writes that
        # activation; fn may change the array in place, and the ops after it read the change
        # (explorer.interp.hooks installs and removes these: patching, ablations)
        self.hooks = {}
        self._shape = None    # (B, T) the activation buffers are sized for
        self._has_targets = False
        self._backward_done = False
        self._scratch = ScratchBuffers()   # the inference forward's reusable buffers
        self.tokenizer = None  # text <-> ids for this vocabulary, when known (explorer.pretrained sets it)
        if init:
            self.init_weights(seed)

    @property
    def lock(self) -> threading.RLock:
        """Hold this to read or write the model while another thread may be computing with it
        (the background trainer, a live view). It is the kernels' compute lock
        (explorer.kernels.runtime): re-entrant, and the model's own methods take it."""
        return compute_lock

    # ----------------------------------------------------------------- parameters
    def _views(self, flat):
        views = {}
        for (name, shape), start, end in zip(self.param_shapes, self.param_offsets[:-1],
                                              self.param_offsets[1:]):
            views[name] = flat[start:end].reshape(shape)
        return views

    def init_weights(self, seed: int = 0) -> None:
        """GPT-2's initialisation: N(0, 0.02) weights, residual projections scaled by
        1/sqrt(2 n_layer), zero biases, unit layernorm gains."""
        rng = np.random.default_rng(seed)
        residual_std = 0.02 / math.sqrt(2 * self.config.n_layer)
        for name, p in self.params.items():
            if name.endswith(".bias"):
                p[...] = 0.0
            elif ".ln" in name or name.startswith("ln_f"):
                p[...] = 1.0
            else:
                std = residual_std if name.endswith("proj.weight") else 0.02
                p[...] = rng.normal(0.0, std, size=p.shape).astype(np.float32)

    def num_parameters(self, exclude_position_embedding: bool = False) -> int:
        n = self.num_params
        return n - self.params["wpe"].size if exclude_position_embedding else n

    # ----------------------------------------------------------------- buffers
    def _allocate(self, B, T):
        """Named activation buffers for a batch of shape (B, T), and their gradients, sized from
        the op list (architecture.py)."""
        if self._shape == (B, T):
            return
        ops = self.ops + [LOSS]
        shapes = activation_shapes(ops, self.config, B, T)
        self.acts = {name: np.zeros(shape, np.float32) for name, shape in shapes.items()}
        self.grad_acts = {name: np.zeros(shape, np.float32)
                          for name, shape in gradient_shapes(ops, shapes).items()}
        self._shape = (B, T)

    # ----------------------------------------------------------------- running ops
    def _run(self, phase, name, kernel, outputs, inputs, inverts=None):
        """Call the registered kernel as fn(*outputs, *inputs) and record it."""
        kernels.get(kernel)(*outputs.values(), *inputs.values())
        self.trace.append(OpRecord(phase, name, kernel, outputs, inputs, inverts))

    def _arrays(self, args):
        """An op's {argument: name} as {argument: array}: names of activations, parameters or
        the batch; anything else (n_head, None) is a constant and stays as it is."""
        return {arg: self._tensors[x] if isinstance(x, str) else x for arg, x in args.items()}

    def _check_tokens(self, arr, what, allow_ignore=False):
        arr = np.asarray(arr)
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2:
            raise ValueError(f"{what} must be an integer array of shape (B, T), got shape {arr.shape}")
        if not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"{what} must hold integer token ids, got dtype {arr.dtype}")
        B, T = arr.shape
        if B < 1 or T < 1:
            raise ValueError(f"{what} must be non-empty, got shape {arr.shape}")
        if T > self.config.block_size:
            raise ValueError(f"sequence length T={T} is longer than block_size="
                             f"{self.config.block_size} (the model has no position embedding past it)")
        lo, hi = int(arr.min()), int(arr.max())
        if allow_ignore and lo == -1:
            lo = int(arr[arr >= 0].min()) if (arr >= 0).any() else 0
        if lo < 0 or hi >= self.config.vocab_size:
            bad = hi if hi >= self.config.vocab_size else lo
            raise ValueError(f"{what} holds token id {bad}, outside the vocabulary "
                             f"[0, {self.config.vocab_size - 1}]"
                             + (" (-1 marks a position to ignore)" if allow_ignore else ""))
        return np.ascontiguousarray(arr, dtype=np.int64)

    # ----------------------------------------------------------------- forward
    def forward(self, idx: ArrayLike, targets: ArrayLike | None = None) -> tuple[np.ndarray, float | None]:
        """Logits (B, T, V) for token ids idx (B, T); with targets (B, T), also the mean
        cross-entropy loss (a float) over the positions whose target is not -1, else loss
        is None. Returns (logits, loss); logits is
        the model's own buffer: copy it to keep it past the next call."""
        idx = self._check_tokens(idx, "idx")
        if targets is not None:
            targets = self._check_tokens(targets, "targets", allow_ignore=True)
            if targets.shape != idx.shape:
                raise ValueError(f"targets shape {targets.shape} must equal idx shape {idx.shape}")
            if not (targets >= 0).any():
                raise ValueError("targets are all -1: there is no position to compute a loss on")
        with compute_lock:
            return self._forward(idx, targets)

    def _forward(self, idx, targets):
        B, T = idx.shape
        self._allocate(B, T)
        self.trace = []
        self._backward_done = False
        self._idx, self._targets = idx, targets
        self._tensors = {**self.params, **self.acts, "idx": idx, "targets": targets}
        ops = self.ops if targets is None else self.ops + [LOSS]
        for op in ops:
            self._run("forward", op.name, op.kernel, self._arrays(op.outputs), self._arrays(op.inputs))
            for name in self.hooks.keys() & op.outputs.values():
                self.hooks[name](self._tensors[name])
        self._has_targets = targets is not None
        if targets is None:
            return self.acts["logits"], None
        # mean over the positions that count (targets of -1 are ignored)
        self._num_targets = int(np.count_nonzero(targets >= 0))
        return self.acts["logits"], float(np.sum(self.acts["losses"], dtype=np.float64) / self._num_targets)

    # ----------------------------------------------------------------- inference
    def infer(self, idx: ArrayLike, keep: Iterable[str] = ()) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The forward pass for when no backward follows: logits (B, T, V) for idx (B, T), and
        {name: activation} of the activations named in `keep` (names as in model.acts, e.g.
        "blocks.3.attn.att"). Same ops, same registry kernels, same results as forward(idx);
        but only the kept activations and the logits get buffers of their own (new arrays,
        the caller's to keep). Every other activation lives in a scratch buffer that is reused
        as soon as no later op reads it (architecture.last_reads): a layer's attention
        matrices, 2 x NH x T^2 floats, exist once, not once per layer, and nothing is sized for
        a backward. The training record (model.acts, model.grad_acts, model.trace) is untouched."""
        idx = self._check_tokens(idx, "idx")
        B, T = idx.shape
        shapes = activation_shapes(self.ops, self.config, B, T)
        keep = _names_to_keep(keep, shapes)
        with compute_lock:
            kept = self._infer({"idx": idx}, shapes, {*keep, "logits"}, 0, len(self.ops))
        return kept["logits"], {name: kept[name] for name in keep}

    def infer_from(self, layer: int, resid: ArrayLike, keep: Iterable[str] = (),
                   to_layer: int | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The inference forward started at block `layer`, from resid (B, T, C): the residual
        stream entering it (architecture.block_input(layer): "encoded" for block 0, else
        "blocks.{layer-1}.residual2", as model.infer(idx, keep=[...]) returns it). The ops
        before block `layer` do not run: what they would compute is in resid. layer = n_layer
        runs only ln_f and the LM head. Returns (logits (B, T, V), kept) as infer does, or with
        to_layer, the stream entering block to_layer (B, T, C) instead of the logits; `keep`
        names activations written from block `layer` on. Hooks (model.hooks) run on those
        activations as in infer; resid is read, never written."""
        L = self.config.n_layer
        last = L if to_layer is None else to_layer
        if not (isinstance(layer, (int, np.integer)) and isinstance(last, (int, np.integer))
                and 0 <= layer <= last <= L and (to_layer is None or layer < to_layer)):
            raise ValueError(f"layer and to_layer must be integers with 0 <= layer < to_layer <= "
                             f"n_layer={L} (to_layer None: on to the logits), got layer={layer!r}, "
                             f"to_layer={to_layer!r}")
        resid = np.ascontiguousarray(resid, dtype=np.float32)
        C = self.config.n_embd
        if resid.ndim != 3 or resid.shape[2] != C or not 1 <= resid.shape[1] <= self.config.block_size \
                or resid.shape[0] < 1:
            raise ValueError(f"resid must be the residual stream (B, T, C={C}) with 1 <= T <= "
                             f"block_size={self.config.block_size}, got shape {resid.shape}")
        start, stop = block_span(self.ops, layer, to_layer)
        every = activation_shapes(self.ops, self.config, *resid.shape[:2])
        shapes = {name: every[name] for op in self.ops[start:stop] for name in op.outputs.values()}
        keep = _names_to_keep(keep, shapes)
        out = "logits" if to_layer is None else block_input(to_layer)
        stream = block_input(layer)
        with compute_lock:   # the stream is "own": never handed to the scratch pool for reuse
            kept = self._infer({stream: resid}, shapes, {*keep, out, stream}, start, stop)
        return kept[out], {name: kept[name] for name in keep}

    def _infer(self, given, shapes, own, start, stop):
        """ops[start:stop] over the tensors `given` (the batch, or a residual stream); the
        names in `own` get arrays of their own (returned), the rest scratch buffers."""
        last = last_reads(self.ops)
        self._scratch.keep_only(shapes.values())
        tensors = {**self.params, **given}
        kept = {}
        for i in range(start, stop):
            op = self.ops[i]
            for name in op.outputs.values():
                fresh = name in own
                tensors[name] = np.empty(shapes[name], np.float32) if fresh else self._scratch.take(shapes[name])
                if fresh:
                    kept[name] = tensors[name]
            names = (*op.outputs.values(), *op.inputs.values())
            kernels.get(op.kernel)(*(tensors[x] if isinstance(x, str) else x for x in names))
            for name in self.hooks.keys() & op.outputs.values():   # as in _forward
                self.hooks[name](tensors[name])
            for name in {x for x in names if isinstance(x, str)}:
                if last.get(name) == i and name not in own:
                    self._scratch.give(tensors.pop(name))
        return kept

    # ----------------------------------------------------------------- backward
    def backward(self) -> None:
        """Gradients of the mean loss of the last forward into model.grads (overwriting)."""
        if not self.trace or self._backward_done is None:
            raise RuntimeError("backward() needs a forward pass first: call model.forward(idx, targets)")
        if not self._has_targets:
            raise RuntimeError("backward() needs a loss: the last forward had no targets "
                               "(call model.forward(idx, targets))")
        if self._backward_done:
            raise RuntimeError("backward() was already called for this forward pass; run forward again")
        with compute_lock:
            self._backward()
            self._backward_done = True

    def _backward(self):
        """The op list bottom to top: each op's backward kernel writes the gradients of its
        inputs from the gradients of its outputs (self.grad_acts, under the tensors' names).
        A residual has no kernel: it hands d out to both its inputs as it is (the same array).
        The residual stream is read twice, by a layernorm and by a residual, so its gradient
        comes in two parts: the layernorm's part goes to `<layernorm>.inp`, and the residual's
        backward adds it to the part the residual handed on (the backward of a fork is an add)."""
        d = self.grad_acts
        d["losses"][...] = 1.0 / self._num_targets   # d mean / d losses[b, t] (0 where ignored: the kernel)
        grad = {"losses": d["losses"]}                # activation -> the array holding its gradient so far
        handed_by = {}                                # activation -> the residual that handed it a part
        for op in reversed(self.ops + [LOSS]):
            if op.backward is None:                   # a residual: out = inp1 + inp2
                for x in op.inputs.values():
                    grad[x], handed_by[x] = grad[op.outputs["out"]], op
                continue
            second_parts = [x.name for x in op.grad_outputs.values() if isinstance(x, Grad) and x.name in grad]
            outputs = {arg: self._gradient_buffer(op, x, grad) for arg, x in op.grad_outputs.items()}
            inputs = {arg: grad[x.name] if isinstance(x, Grad) else x
                      for arg, x in self._arrays(op.grad_inputs).items()}
            self._run("backward", op.backward_name, op.backward, outputs, inputs, op.name)
            for x in second_parts:
                residual = handed_by[x]
                self._run("backward", residual.backward_name, "residual_forward", {"out": d[x]},
                          {"inp1": d[f"{op.name}.inp"], "inp2": grad[x]}, residual.name)
                grad[x] = d[x]

    def _gradient_buffer(self, op, x, grad):
        """Where op's backward writes x = d(name): a parameter's gradient into self.grads, an
        activation's into self.grad_acts[name], or into `<op>.inp` when a residual handed
        that activation a part of its gradient already. None (no bias) stays None."""
        if x is None:
            return None
        if x.name in self.grads:
            return self.grads[x.name]
        if x.name in grad:
            return self.grad_acts[f"{op.name}.inp"]
        grad[x.name] = self.grad_acts[x.name]
        return grad[x.name]

    # ----------------------------------------------------------------- generation
    def generate(self, idx: ArrayLike, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, seed: int | None = None) -> np.ndarray:
        """Continue each row of idx (B, T) by max_new_tokens sampled tokens, using a KV
        cache. temperature=0 picks the most likely token. Returns (B, T + max_new_tokens)."""
        from .generate import generate
        return generate(self, idx, max_new_tokens, temperature=temperature, top_k=top_k, seed=seed)

    def decoder(self, prompt_ids: ArrayLike, capacity: int | None = None) -> "Decoder":
        """A decode session (explorer.model.generate.Decoder): prompt_ids (B, T) run once, then
        .step(ids) adds one token per row on one position, through the KV cache; .logits (B, V)."""
        from .generate import Decoder
        return Decoder(self, prompt_ids, capacity)

    def __repr__(self):
        c = self.config
        return (f"GPT(n_layer={c.n_layer}, n_head={c.n_head}, n_embd={c.n_embd}, "
                f"vocab_size={c.vocab_size}, block_size={c.block_size}; "
                f"{self.num_params:,} parameters)")



def _names_to_keep(keep, shapes):
    """keep as a list without repeats, every name an activation of `shapes` (what the forward
    about to run writes)."""
    if isinstance(keep, str):
        raise TypeError(f"keep must be a list of activation names, got the string {keep!r} "
                        f"(write keep=[{keep!r}])")
    keep = list(dict.fromkeys(keep))
    unknown = [name for name in keep if name not in shapes]
    if unknown:
        raise KeyError(f"no activation named {unknown[0]!r} in the inference forward; "
                       f"expected names from: {list(shapes)}")
    return keep
