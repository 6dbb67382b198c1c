"""Model configuration and the names and shapes of every parameter."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class GPTConfig:
    n_layer: int = 12        # GPT-2 124M: 12 transformer blocks
    n_head: int = 12         # 12 attention heads per block
    n_embd: int = 768        # channels C of the residual stream
    vocab_size: int = 50257  # V: GPT-2's BPE vocabulary
    block_size: int = 1024   # maxT: longest sequence (learned position embeddings)

    def __post_init__(self) -> None:
        for field in ("n_layer", "n_head", "n_embd", "vocab_size", "block_size"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"GPTConfig.{field} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}): "
                             f"each head gets n_embd / n_head channels")

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GPTConfig:
        known = {k: d[k] for k in ("n_layer", "n_head", "n_embd", "vocab_size", "block_size") if k in d}
        missing = {"n_layer", "n_head", "n_embd", "vocab_size", "block_size"} - set(known)
        if missing:
            raise ValueError(f"model config is missing {sorted(missing)}; got keys {sorted(d)}")
        for k, v in known.items():   # 2.9 must not quietly become 2
            if not (isinstance(v, int) or (isinstance(v, float) and v.is_integer())) \
                    or isinstance(v, bool):
                raise ValueError(f"model config {k} must be a whole number, got {v!r}")
        return cls(**{k: int(v) for k, v in known.items()})


#: Per-block parameters, in llm.c's order; (suffix, shape as a function of C).
BLOCK_PARAMS = [
    ("ln1.weight", lambda C: (C,)),
    ("ln1.bias", lambda C: (C,)),
    ("attn.qkv.weight", lambda C: (3 * C, C)),
    ("attn.qkv.bias", lambda C: (3 * C,)),
    ("attn.proj.weight", lambda C: (C, C)),
    ("attn.proj.bias", lambda C: (C,)),
    ("ln2.weight", lambda C: (C,)),
    ("ln2.bias", lambda C: (C,)),
    ("mlp.fc.weight", lambda C: (4 * C, C)),
    ("mlp.fc.bias", lambda C: (4 * C,)),
    ("mlp.proj.weight", lambda C: (C, 4 * C)),
    ("mlp.proj.bias", lambda C: (C,)),
]


def param_shapes(config: GPTConfig) -> list[tuple[str, tuple[int, ...]]]:
    """[(name, shape)] of every parameter, in the order they sit in the flat buffer.

    The order is llm.c's: wte, wpe, then each kind of block parameter for all layers
    (ln1.weight of layers 0..L-1, then ln1.bias of layers 0..L-1, ...), then ln_f. Weights
    use nn.Linear's (out, in) layout. The LM head is tied to wte, so it has no entry."""
    C, L = config.n_embd, config.n_layer
    shapes = [("wte", (config.vocab_size, C)), ("wpe", (config.block_size, C))]
    for suffix, shape in BLOCK_PARAMS:
        shapes += [(f"blocks.{l}.{suffix}", shape(C)) for l in range(L)]
    shapes += [("ln_f.weight", (C,)), ("ln_f.bias", (C,))]
    return shapes
