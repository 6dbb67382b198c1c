"""GPT-2's ops, in order: the one place the architecture is written down.

    ops = gpt2_ops(config)      # [Op]: embedding, n_layer blocks, ln_f, lm_head
    LOSS                        # the op after them when there are targets

An Op names a kernel of the registry and the tensors it writes and reads, by name: activations
(model.acts), parameters (model.params), the batch ("idx", "targets"), or a constant (n_head,
None for "no bias"). Beside it stands its backward: the backward kernel, the gradients it
writes and what it reads, where d("x") is the gradient of the loss with respect to x.
Everything else reads this list, so a change here changes all of them:

- `GPT.forward` calls each op's kernel, top to bottom, and records it (model.trace);
- `GPT.backward` calls each op's backward kernel, bottom to top;
- generation (generate.py) calls the forward kernels on the new positions, with a KV cache;
- the activation buffers (model.acts, model.grad_acts) are sized from each op's `shapes`;
- the inference forward (`GPT.infer`) reuses a buffer once `last_reads` says no later op reads it;
- `GPT.infer_from` starts at a block, from the residual stream entering it (`block_span`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import GPTConfig


@dataclass(frozen=True)
class Grad:
    """d(x): the gradient of the loss with respect to the tensor named x."""
    name: str

    def __repr__(self):
        return f"d({self.name!r})"


d = Grad


@dataclass
class Op:
    name: str              # "blocks.0.ln1": its name in model.trace
    kernel: str            # the forward kernel's name in the registry: "layernorm_forward"
    outputs: dict          # kernel argument -> activation it writes, in the kernel's order
    inputs: dict           # kernel argument -> tensor name or constant, in the kernel's order
    shapes: dict           # activation it writes -> shape in dimension names, or another tensor's name
    backward: str | None = None     # the backward kernel; None for a residual (see residual())
    grad_outputs: dict = field(default_factory=dict)   # backward kernel argument -> what it writes
    grad_inputs: dict = field(default_factory=dict)    # backward kernel argument -> what it reads
    backward_name: str = ""         # its backward's name in model.trace: name + ".backward"

    def __post_init__(self):
        self.backward_name = self.backward_name or f"{self.name}.backward"


BTC = ("B", "T", "C")


def embedding(name: str, out: str) -> Op:
    # out[b, t] = wte[idx[b, t]] + wpe[t]
    return Op(name, "encoder_forward", {"out": out}, {"idx": "idx", "wte": "wte", "wpe": "wpe"},
              {out: BTC},
              "encoder_backward", {"dwte": d("wte"), "dwpe": d("wpe")}, {"dout": d(out), "idx": "idx"})


def layernorm(name: str, inp: str) -> Op:
    # out = (inp - mean) * rstd * weight + bias over the channels; mean, rstd kept for backward
    out, mean, rstd = f"{name}.out", f"{name}.mean", f"{name}.rstd"
    weight, bias = f"{name}.weight", f"{name}.bias"
    return Op(name, "layernorm_forward", {"out": out, "mean": mean, "rstd": rstd},
              {"inp": inp, "weight": weight, "bias": bias}, {out: BTC, mean: ("B", "T"), rstd: ("B", "T")},
              "layernorm_backward", {"dinp": d(inp), "dweight": d(weight), "dbias": d(bias)},
              {"dout": d(out), "inp": inp, "weight": weight, "mean": mean, "rstd": rstd})


def linear(name: str, inp: str, channels: str, out: str | None = None, weight: str | None = None,
           bias: bool = True) -> Op:
    # out = inp @ weight.T + bias, (B, T, channels); its tensors are named after it unless given
    out, weight = out or name, weight or f"{name}.weight"
    bias = f"{name}.bias" if bias else None
    return Op(name, "matmul_forward", {"out": out}, {"inp": inp, "weight": weight, "bias": bias},
              {out: ("B", "T", channels)},
              "matmul_backward", {"dinp": d(inp), "dweight": d(weight), "dbias": bias and d(bias)},
              {"dout": d(out), "inp": inp, "weight": weight})


def attention(name: str, qkv: str, n_head: int) -> Op:
    # out = softmax(q k^T / sqrt(hs), causal) v per head; preatt (q k^T) and att kept
    out, preatt, att = f"{name}.out", f"{name}.preatt", f"{name}.att"
    return Op(name, "attention_forward", {"out": out, "preatt": preatt, "att": att},
              {"qkv": qkv, "n_head": n_head},
              {preatt: ("B", "NH", "T", "T"), att: ("B", "NH", "T", "T"), out: BTC},
              "attention_backward", {"dqkv": d(qkv), "dpreatt": d(preatt), "datt": d(att)},
              {"dout": d(out), "qkv": qkv, "att": att, "n_head": n_head})


def gelu(name: str, inp: str) -> Op:
    # out = 0.5 * inp * (1 + tanh(sqrt(2/pi) * (inp + 0.044715 inp^3)))
    return Op(name, "gelu_forward", {"out": name}, {"inp": inp}, {name: inp},
              "gelu_backward", {"dinp": d(inp)}, {"inp": inp, "dout": d(name)})


def residual(name: str, skip: str, branch: str, backward_name: str) -> Op:
    """out = skip + branch. Its backward hands d out to both inputs unchanged, so it has no
    kernel of its own. But the skip also fed the branch's first op (a layernorm), whose backward
    sends a second part of d skip: the add of the two parts is this op's backward, named
    `backward_name` after the tensor whose gradient it completes."""
    return Op(name, "residual_forward", {"out": name}, {"inp1": skip, "inp2": branch}, {name: skip},
              backward_name=backward_name)


def crossentropy(name: str, logits: str, targets: str) -> Op:
    # losses[b, t] = -log softmax(logits[b, t])[targets[b, t]]; probs kept for backward
    return Op(name, "crossentropy_forward", {"losses": "losses", "probs": "probs"},
              {"logits": logits, "targets": targets}, {"probs": logits, "losses": ("B", "T")},
              "crossentropy_softmax_backward", {"dlogits": d(logits)},
              {"dlosses": d("losses"), "probs": "probs", "targets": targets})


def block(l: int, x: str, n_head: int) -> list[Op]:
    """Transformer block l over the residual stream x (pre-LN, as GPT-2):
    x + attn(ln1(x)) = residual1, then residual1 + mlp(ln2(residual1)) = residual2."""
    b = f"blocks.{l}."
    return [
        layernorm(b + "ln1", x),
        linear(b + "attn.qkv", b + "ln1.out", "3C"),
        attention(b + "attn", b + "attn.qkv", n_head),
        linear(b + "attn.proj", b + "attn.out", "C"),
        residual(b + "residual1", x, b + "attn.proj", backward_name=b + "residual.backward"),
        layernorm(b + "ln2", b + "residual1"),
        linear(b + "mlp.fc", b + "ln2.out", "4C"),
        gelu(b + "mlp.gelu", b + "mlp.fc"),
        linear(b + "mlp.proj", b + "mlp.gelu", "C"),
        residual(b + "residual2", b + "residual1", b + "mlp.proj", backward_name=b + "residual1.backward"),
    ]


def block_input(layer: int) -> str:
    """The residual stream entering block `layer`: "encoded" for block 0, else block layer-1's
    output; with layer = n_layer, the stream after the last block (what ln_f reads)."""
    return "encoded" if layer == 0 else f"blocks.{layer - 1}.residual2"


def gpt2_ops(config: GPTConfig) -> list[Op]:
    """Every op of GPT-2's forward pass, from token ids to logits, in order."""
    ops = [embedding("embedding", out="encoded")]
    for l in range(config.n_layer):
        ops += block(l, block_input(l), config.n_head)
    ops += [layernorm("ln_f", block_input(config.n_layer)),
            # the LM head is the token embedding, transposed: logits = ln_f.out @ wte.T
            linear("lm_head", "ln_f.out", "V", out="logits", weight="wte", bias=False)]
    return ops


LOSS = crossentropy("loss", "logits", "targets")


# ----------------------------------------------------------------------------- buffer sizes
def activation_shapes(ops: list[Op], config: GPTConfig, B: int, T: int) -> dict[str, tuple[int, ...]]:
    """{activation name: shape} of everything `ops` write, for a batch (B, T), in op order."""
    C = config.n_embd
    dims = {"B": B, "T": T, "C": C, "3C": 3 * C, "4C": 4 * C, "NH": config.n_head, "V": config.vocab_size}
    shapes = {}
    for op in ops:
        for name, shape in op.shapes.items():
            shapes[name] = shapes[shape] if isinstance(shape, str) else tuple(dims[s] for s in shape)
    return shapes


def gradient_shapes(ops: list[Op], shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """{name: shape} of the gradient buffers backward uses: every activation some op's backward
    writes or reads the gradient of, then `<op>.inp` for each op that reads an input of a
    residual too (its part of that input's gradient goes there first, see residual())."""
    used = {x.name for op in ops for x in (*op.grad_outputs.values(), *op.grad_inputs.values())
            if isinstance(x, Grad)}
    grads = {name: shape for name, shape in shapes.items() if name in used}
    residual_inputs = {x for op in ops if op.backward is None for x in op.inputs.values()}
    for op in ops:
        for x in op.grad_outputs.values():
            if isinstance(x, Grad) and x.name in residual_inputs:
                grads[f"{op.name}.inp"] = shapes[x.name]
    return grads


def last_reads(ops: list[Op]) -> dict[str, int]:
    """{activation: index in ops of the last op that reads it}, for everything ops write. An
    activation that no op of the list reads (a layernorm's mean, attention's att: kept for the
    backward) counts as last read by the op that writes it. An inference forward frees a
    buffer for reuse once the op at this index has run."""
    last = {name: i for i, op in enumerate(ops) for name in op.outputs.values()}
    for i, op in enumerate(ops):
        for x in op.inputs.values():
            if isinstance(x, str) and x in last:
                last[x] = i
    return last


def block_span(ops: list[Op], layer: int, to_layer: int | None) -> tuple[int, int]:
    """(start, stop): ops[start:stop] are blocks layer .. to_layer - 1 (to_layer None: on to the
    logits), start being the first op that reads block_input(layer). Raises if those ops read
    an activation written before start other than that stream: they could not run from it."""
    start = next(i for i, op in enumerate(ops) if block_input(layer) in op.inputs.values())
    stop = len(ops) if to_layer is None else next(
        i for i, op in enumerate(ops) if block_input(to_layer) in op.inputs.values())
    written_before = {name for op in ops[:start] for name in op.outputs.values()}
    read = {x for op in ops[start:stop] for x in op.inputs.values() if isinstance(x, str)}
    if read & written_before != {block_input(layer)}:
        raise RuntimeError(f"blocks from {layer} on read {sorted(read & written_before)} from "
                           f"before them, not only the stream {block_input(layer)!r}")
    return start, stop
