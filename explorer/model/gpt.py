"""GPT-2 in plain Python over named buffers; every op is a kernel looked up by name.

    model = GPT(GPTConfig(n_layer=4, n_head=4, n_embd=128, vocab_size=65, block_size=128))
    logits, loss = model.forward(idx, targets)   # idx, targets: int arrays (B, T)
    model.backward()                             # fills model.grads (same names as params)
    model.trace                                  # every op of the last forward and backward

Architecture (GPT-2 exactly): token + learned position embedding; n_layer pre-LN blocks
    x = x + attn(ln1(x));  x = x + mlp(ln2(x))   with mlp = proj(gelu(fc(.)))
then a final layernorm and an LM head tied to the token embedding.
"""
import math
from dataclasses import dataclass

import numpy as np

from .. import kernels
from ..kernels.runtime import compute_lock
from ..train import warmup as coldstart
from .config import GPTConfig, param_shapes


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


class GPT:
    def __init__(self, config: GPTConfig, seed: int = 0, *, init: bool = True):
        """init=False leaves every parameter 0, for loaders that overwrite them all: it skips
        drawing the random weights (seconds for GPT-2 XL) and their float64 temporaries."""
        if not isinstance(config, GPTConfig):
            raise TypeError(f"GPT expects a GPTConfig, got {type(config).__name__}")
        self.config = config
        self.param_shapes = param_shapes(config)
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
        self._shape = None    # (B, T) the activation buffers are sized for
        self._has_targets = False
        self._backward_done = False
        self.tokenizer = None  # text <-> ids for this vocabulary, when known (explorer.pretrained sets it)
        if init:
            self.init_weights(seed)

    @property
    def lock(self):
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

    def init_weights(self, seed=0):
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

    def num_parameters(self, exclude_position_embedding=False):
        n = self.num_params
        return n - self.params["wpe"].size if exclude_position_embedding else n

    # ----------------------------------------------------------------- buffers
    def _allocate(self, B, T):
        """Named activation buffers for a batch of shape (B, T), and their gradients."""
        if self._shape == (B, T):
            return
        cfg = self.config
        C, NH, V = cfg.n_embd, cfg.n_head, cfg.vocab_size
        shapes = {"encoded": (B, T, C)}
        for l in range(cfg.n_layer):
            p = f"blocks.{l}."
            shapes.update({
                p + "ln1.out": (B, T, C), p + "ln1.mean": (B, T), p + "ln1.rstd": (B, T),
                p + "attn.qkv": (B, T, 3 * C),
                p + "attn.preatt": (B, NH, T, T), p + "attn.att": (B, NH, T, T),
                p + "attn.out": (B, T, C), p + "attn.proj": (B, T, C),
                p + "residual1": (B, T, C),
                p + "ln2.out": (B, T, C), p + "ln2.mean": (B, T), p + "ln2.rstd": (B, T),
                p + "mlp.fc": (B, T, 4 * C), p + "mlp.gelu": (B, T, 4 * C),
                p + "mlp.proj": (B, T, C),
                p + "residual2": (B, T, C),
            })
        shapes.update({"ln_f.out": (B, T, C), "ln_f.mean": (B, T), "ln_f.rstd": (B, T),
                       "logits": (B, T, V), "probs": (B, T, V), "losses": (B, T)})
        self.acts = {name: np.zeros(shape, np.float32) for name, shape in shapes.items()}
        # gradients of everything backward touches (not of the cached statistics)
        grad_names = [n for n in shapes if not n.endswith((".mean", ".rstd")) and n != "probs"]
        grad_names += [f"blocks.{l}.{ln}.inp" for l in range(cfg.n_layer) for ln in ("ln1", "ln2")]
        self.grad_acts = {n: np.zeros(shapes.get(n, (B, T, C)), np.float32) for n in grad_names}
        self._shape = (B, T)

    # ----------------------------------------------------------------- running ops
    def _run(self, phase, name, kernel, outputs, inputs, inverts=None):
        """Call the registered kernel as fn(*outputs, *inputs) and record it."""
        kernels.get(kernel)(*outputs.values(), *inputs.values())
        self.trace.append(OpRecord(phase, name, kernel, outputs, inputs, inverts))

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
    def forward(self, idx, targets=None):
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
        coldstart.start(type(self), self.config)        # first call in a fresh install: compile in parallel
        with compute_lock:
            return self._forward(idx, targets)

    def _forward(self, idx, targets):
        cfg, p = self.config, self.params
        B, T = idx.shape
        self._allocate(B, T)
        a = self.acts
        self.trace = []
        self._backward_done = False
        self._idx, self._targets = idx, targets
        run = lambda *args: self._run("forward", *args)  # noqa: E731

        run("embedding", "encoder_forward", {"out": a["encoded"]},
            {"idx": idx, "wte": p["wte"], "wpe": p["wpe"]})
        x = a["encoded"]
        for l in range(cfg.n_layer):
            b = f"blocks.{l}."
            run(b + "ln1", "layernorm_forward",
                {"out": a[b + "ln1.out"], "mean": a[b + "ln1.mean"], "rstd": a[b + "ln1.rstd"]},
                {"inp": x, "weight": p[b + "ln1.weight"], "bias": p[b + "ln1.bias"]})
            run(b + "attn.qkv", "matmul_forward", {"out": a[b + "attn.qkv"]},
                {"inp": a[b + "ln1.out"], "weight": p[b + "attn.qkv.weight"],
                 "bias": p[b + "attn.qkv.bias"]})
            run(b + "attn", "attention_forward",
                {"out": a[b + "attn.out"], "preatt": a[b + "attn.preatt"], "att": a[b + "attn.att"]},
                {"qkv": a[b + "attn.qkv"], "n_head": cfg.n_head})
            run(b + "attn.proj", "matmul_forward", {"out": a[b + "attn.proj"]},
                {"inp": a[b + "attn.out"], "weight": p[b + "attn.proj.weight"],
                 "bias": p[b + "attn.proj.bias"]})
            run(b + "residual1", "residual_forward", {"out": a[b + "residual1"]},
                {"inp1": x, "inp2": a[b + "attn.proj"]})
            run(b + "ln2", "layernorm_forward",
                {"out": a[b + "ln2.out"], "mean": a[b + "ln2.mean"], "rstd": a[b + "ln2.rstd"]},
                {"inp": a[b + "residual1"], "weight": p[b + "ln2.weight"], "bias": p[b + "ln2.bias"]})
            run(b + "mlp.fc", "matmul_forward", {"out": a[b + "mlp.fc"]},
                {"inp": a[b + "ln2.out"], "weight": p[b + "mlp.fc.weight"], "bias": p[b + "mlp.fc.bias"]})
            run(b + "mlp.gelu", "gelu_forward", {"out": a[b + "mlp.gelu"]}, {"inp": a[b + "mlp.fc"]})
            run(b + "mlp.proj", "matmul_forward", {"out": a[b + "mlp.proj"]},
                {"inp": a[b + "mlp.gelu"], "weight": p[b + "mlp.proj.weight"],
                 "bias": p[b + "mlp.proj.bias"]})
            run(b + "residual2", "residual_forward", {"out": a[b + "residual2"]},
                {"inp1": a[b + "residual1"], "inp2": a[b + "mlp.proj"]})
            x = a[b + "residual2"]
        run("ln_f", "layernorm_forward",
            {"out": a["ln_f.out"], "mean": a["ln_f.mean"], "rstd": a["ln_f.rstd"]},
            {"inp": x, "weight": p["ln_f.weight"], "bias": p["ln_f.bias"]})
        # the LM head is the token embedding, transposed: logits = ln_f.out @ wte.T
        run("lm_head", "matmul_forward", {"out": a["logits"]},
            {"inp": a["ln_f.out"], "weight": p["wte"], "bias": None})
        self._has_targets = targets is not None
        if targets is None:
            return a["logits"], None
        run("loss", "crossentropy_forward", {"losses": a["losses"], "probs": a["probs"]},
            {"logits": a["logits"], "targets": targets})
        # mean over the positions that count (targets of -1 are ignored)
        self._num_targets = int(np.count_nonzero(targets >= 0))
        return a["logits"], float(np.sum(a["losses"], dtype=np.float64) / self._num_targets)

    # ----------------------------------------------------------------- backward
    def backward(self):
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
        cfg, p, g = self.config, self.params, self.grads
        a, d = self.acts, self.grad_acts
        B, T = self._shape
        run = lambda name, kernel, outputs, inputs, inverts: self._run(  # noqa: E731
            "backward", name, kernel, outputs, inputs, inverts)

        d["losses"][...] = 1.0 / self._num_targets   # d mean / d losses[b, t] (0 where ignored: the kernel)
        run("loss.backward", "crossentropy_softmax_backward", {"dlogits": d["logits"]},
            {"dlosses": d["losses"], "probs": a["probs"], "targets": self._targets}, "loss")
        run("lm_head.backward", "matmul_backward",
            {"dinp": d["ln_f.out"], "dweight": g["wte"], "dbias": None},
            {"dout": d["logits"], "inp": a["ln_f.out"], "weight": p["wte"]}, "lm_head")
        last = f"blocks.{cfg.n_layer - 1}.residual2" if cfg.n_layer else "encoded"
        run("ln_f.backward", "layernorm_backward",
            {"dinp": d[last], "dweight": g["ln_f.weight"], "dbias": g["ln_f.bias"]},
            {"dout": d["ln_f.out"], "inp": a[last], "weight": p["ln_f.weight"],
             "mean": a["ln_f.mean"], "rstd": a["ln_f.rstd"]}, "ln_f")
        for l in reversed(range(cfg.n_layer)):
            b = f"blocks.{l}."
            block_in = f"blocks.{l - 1}.residual2" if l > 0 else "encoded"
            # residual2 = residual1 + mlp.proj: both receive d residual2 unchanged
            dres2 = d[b + "residual2"]
            run(b + "mlp.proj.backward", "matmul_backward",
                {"dinp": d[b + "mlp.gelu"], "dweight": g[b + "mlp.proj.weight"],
                 "dbias": g[b + "mlp.proj.bias"]},
                {"dout": dres2, "inp": a[b + "mlp.gelu"], "weight": p[b + "mlp.proj.weight"]},
                b + "mlp.proj")
            run(b + "mlp.gelu.backward", "gelu_backward", {"dinp": d[b + "mlp.fc"]},
                {"inp": a[b + "mlp.fc"], "dout": d[b + "mlp.gelu"]}, b + "mlp.gelu")
            run(b + "mlp.fc.backward", "matmul_backward",
                {"dinp": d[b + "ln2.out"], "dweight": g[b + "mlp.fc.weight"],
                 "dbias": g[b + "mlp.fc.bias"]},
                {"dout": d[b + "mlp.fc"], "inp": a[b + "ln2.out"], "weight": p[b + "mlp.fc.weight"]},
                b + "mlp.fc")
            run(b + "ln2.backward", "layernorm_backward",
                {"dinp": d[b + "ln2.inp"], "dweight": g[b + "ln2.weight"], "dbias": g[b + "ln2.bias"]},
                {"dout": d[b + "ln2.out"], "inp": a[b + "residual1"], "weight": p[b + "ln2.weight"],
                 "mean": a[b + "ln2.mean"], "rstd": a[b + "ln2.rstd"]}, b + "ln2")
            # residual1 fed both ln2 and the skip connection: its gradient is the sum
            run(b + "residual1.backward", "residual_forward", {"out": d[b + "residual1"]},
                {"inp1": d[b + "ln2.inp"], "inp2": dres2}, b + "residual2")
            run(b + "attn.proj.backward", "matmul_backward",
                {"dinp": d[b + "attn.out"], "dweight": g[b + "attn.proj.weight"],
                 "dbias": g[b + "attn.proj.bias"]},
                {"dout": d[b + "residual1"], "inp": a[b + "attn.out"],
                 "weight": p[b + "attn.proj.weight"]}, b + "attn.proj")
            run(b + "attn.backward", "attention_backward",
                {"dqkv": d[b + "attn.qkv"], "dpreatt": d[b + "attn.preatt"], "datt": d[b + "attn.att"]},
                {"dout": d[b + "attn.out"], "qkv": a[b + "attn.qkv"], "att": a[b + "attn.att"],
                 "n_head": cfg.n_head}, b + "attn")
            run(b + "attn.qkv.backward", "matmul_backward",
                {"dinp": d[b + "ln1.out"], "dweight": g[b + "attn.qkv.weight"],
                 "dbias": g[b + "attn.qkv.bias"]},
                {"dout": d[b + "attn.qkv"], "inp": a[b + "ln1.out"], "weight": p[b + "attn.qkv.weight"]},
                b + "attn.qkv")
            run(b + "ln1.backward", "layernorm_backward",
                {"dinp": d[b + "ln1.inp"], "dweight": g[b + "ln1.weight"], "dbias": g[b + "ln1.bias"]},
                {"dout": d[b + "ln1.out"], "inp": a[block_in], "weight": p[b + "ln1.weight"],
                 "mean": a[b + "ln1.mean"], "rstd": a[b + "ln1.rstd"]}, b + "ln1")
            # the block's input fed both ln1 and the skip connection
            run(b + "residual.backward", "residual_forward", {"out": d[block_in]},
                {"inp1": d[b + "ln1.inp"], "inp2": d[b + "residual1"]}, b + "residual1")
        run("embedding.backward", "encoder_backward", {"dwte": g["wte"], "dwpe": g["wpe"]},
            {"dout": d["encoded"], "idx": self._idx}, "embedding")

    # ----------------------------------------------------------------- generation
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, seed=None):
        """Continue each row of idx (B, T) by max_new_tokens sampled tokens, using a KV
        cache. temperature=0 picks the most likely token. Returns (B, T + max_new_tokens)."""
        from .generate import generate
        return generate(self, idx, max_new_tokens, temperature=temperature, top_k=top_k, seed=seed)

    def __repr__(self):
        c = self.config
        return (f"GPT(n_layer={c.n_layer}, n_head={c.n_head}, n_embd={c.n_embd}, "
                f"vocab_size={c.vocab_size}, block_size={c.block_size}; "
                f"{self.num_params:,} parameters)")

