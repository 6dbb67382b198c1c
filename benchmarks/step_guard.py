"""What making every training step atomic costs, as a share of the step.

On the shipped path (every kernel the package's own) a step pays for: the registry check
(`kernels.swapped()`), holding Ctrl-C for the step (`interrupts_deferred`), and one pass
over the parameters after AdamW (`count_nonfinite`). While a kernel is swapped, it also
copies the parameters and AdamW's moments before the step (`Trainer._guarded_state`).
Each piece is timed between real steps of the bench configs, and reported as a median
share of the median step.

It re-runs itself without the workplace's OpenBLAS pins when they are set, as a user's machine
has none:    python benchmarks/step_guard.py [tiny,small,124m] [steps]
"""
import statistics
import sys

import numpy as np

from explorer import GPT, GPTConfig, Trainer, kernels
from explorer.kernels.adamw import count_nonfinite
from explorer.lab.bench.blas import blas_pools, describe, rerun_unpinned
from explorer.lab.bench.configs import CONFIGS
from explorer.lab.bench.gemm import median_seconds
from explorer.train.trainer import interrupts_deferred


class RandomTokens:
    def __init__(self, vocab_size):
        self.vocab_size = vocab_size

    def get_batch(self, split, batch_size, seq_len, rng):
        x = rng.integers(0, self.vocab_size, (batch_size, seq_len + 1))
        return x[:, :-1], x[:, 1:]


def _seconds(fn, repeat=5):
    return median_seconds(fn, repeat)


def _deferred():
    with interrupts_deferred():
        pass


def measure(name, steps):
    cfg = CONFIGS[name]
    model = GPT(GPTConfig(n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd,
                          vocab_size=cfg.vocab_size, block_size=cfg.block_size))
    trainer = Trainer(model, RandomTokens(cfg.vocab_size), batch_size=cfg.batch_size,
                      seq_len=cfg.seq_len)
    for _ in range(cfg.warmup):
        trainer.step()
    pieces = {"registry check": lambda: kernels.swapped(), "hold Ctrl-C": _deferred,
              "finite check": lambda: count_nonfinite(model.flat_params)}
    step_s, piece_s, copy_s = [], {k: [] for k in pieces}, []
    for _ in range(steps):
        step_s.append(trainer.step()["ms"] / 1000)
        for key, fn in pieces.items():
            piece_s[key].append(_seconds(fn))
        with kernels.use(gelu_forward=lambda *args: None):   # any non-shipped kernel
            copy_s.append(_seconds(trainer._guarded_state, repeat=3))
    step = statistics.median(step_s)
    shipped = sum(statistics.median(v) for v in piece_s.values())
    row = {"config": name, "params": model.num_params, "step_ms": 1000 * step}
    row.update({k: 1000 * statistics.median(v) for k, v in piece_s.items()})
    row["shipped_total_pct"] = 100 * shipped / step
    row["guard_copy_ms"] = 1000 * statistics.median(copy_s)
    row["guard_copy_pct"] = 100 * statistics.median(copy_s) / step
    return row


def main(argv):
    code = rerun_unpinned()          # time with OpenBLAS as a user's machine picks it
    if code is not None:
        return code
    names = (argv[0] if argv else "tiny,small,124m").split(",")
    steps = int(argv[1]) if len(argv) > 1 else 5
    print(f"BLAS: {describe(blas_pools())}; numpy {np.__version__}")
    print(f"{'config':7s} {'params':>11s} {'step ms':>9s} {'registry ms':>12s} {'Ctrl-C ms':>10s} "
          f"{'finite ms':>10s} {'shipped %':>10s} {'guard copy ms':>14s} {'guarded %':>10s}")
    for name in names:
        r = measure(name, steps)
        print(f"{r['config']:7s} {r['params']:11,d} {r['step_ms']:9.1f} {r['registry check']:12.4f} "
              f"{r['hold Ctrl-C']:10.4f} {r['finite check']:10.2f} {r['shipped_total_pct']:10.2f} "
              f"{r['guard_copy_ms']:14.1f} {r['guard_copy_pct']:10.1f}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
