"""What `explorer bench` measures: the model configs, the work of one step, random tokens.

The work per step is counted as in the GPT-2 / llm.c papers:

    F = 6 N B T + 12 L C T B T     (N = parameters except the position table)

6 N B T is the matrix multiplies of forward (2 per weight per token) and backward (4);
the second term is attention's q @ k^T and att @ v.
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class BenchConfig:
    n_layer: int
    n_head: int
    n_embd: int
    vocab_size: int
    block_size: int
    batch_size: int   # B
    seq_len: int      # T
    warmup: int       # untimed steps first (compile, thread start, caches)
    steps: int        # timed steps per process


CONFIGS = {
    "tiny": BenchConfig(4, 4, 128, 65, 128, batch_size=32, seq_len=128, warmup=3, steps=10),
    "small": BenchConfig(6, 6, 384, 65, 256, batch_size=16, seq_len=256, warmup=2, steps=5),
    "124m": BenchConfig(12, 12, 768, 50257, 1024, batch_size=4, seq_len=64, warmup=2, steps=4),
    # the size students train on (char-level Shakespeare): small batches, per-kernel overhead shows
    "shakespeare": BenchConfig(4, 4, 128, 65, 64, batch_size=12, seq_len=64, warmup=5, steps=30),
}
ALIASES = {"gpt2-124m": "124m", "gpt2": "124m", "124M": "124m", "small-batch": "shakespeare"}


def get_config(name):
    key = ALIASES.get(name, ALIASES.get(name.lower(), name.lower()))
    if key not in CONFIGS:
        raise ValueError(f"unknown bench config {name!r}; expected one of: {', '.join(CONFIGS)}")
    return CONFIGS[key]


def count_params(cfg, exclude_position_embedding=True):
    """GPT-2's parameter count from the shapes alone (LM head tied to wte)."""
    C, L = cfg.n_embd, cfg.n_layer
    per_block = 2 * C + (3 * C * C + 3 * C) + (C * C + C) + 2 * C + (4 * C * C + 4 * C) + (4 * C * C + C)
    n = cfg.vocab_size * C + L * per_block + 2 * C
    return n if exclude_position_embedding else n + cfg.block_size * C


def step_flops(cfg):
    """F = 6 N B T + 12 L C T B T: floating-point operations of one training step."""
    B, T = cfg.batch_size, cfg.seq_len
    return 6 * count_params(cfg) * B * T + 12 * cfg.n_layer * cfg.n_embd * T * B * T


class RandomTokens:
    """A dataset of uniformly random tokens: the step's cost does not depend on the text."""
    tokenizer = None

    def __init__(self, vocab_size, seq_len):
        self.vocab_size, self.seq_len = vocab_size, seq_len

    def get_batch(self, split, batch_size, block_size, rng):
        tokens = rng.integers(0, self.vocab_size, size=(batch_size, block_size + 1), dtype="int64")
        return tokens[:, :-1].copy(), tokens[:, 1:].copy()
