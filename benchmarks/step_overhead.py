"""Where does a small step's time above its FLOP floor go? Dispatch, thread wake-ups, small GEMMs.

    python benchmarks/step_overhead.py [--config shakespeare] [--steps 20]

For one bench config (default: the size students train on, L4 C128 T64 B12 V65), in one
process (re-started without the OpenBLAS pins when they are set):
- the step with 1 and with 2 threads (alternating blocks of steps), next to its FLOP floor
  (GEMM work at the GEMM ceiling, explorer/lab/bench/gemm.py);
- the step's linear-layer products alone, at their own shapes (small GEMMs run far below the
  ceiling), with 1 and 2 threads;
- how many kernels a step calls, and what one call costs when it has (almost) no work:
  the registry and Numba's dispatch (a serial kernel), a parallel kernel's fork and join
  across threads, an OpenBLAS call, and a Numba parallel call right after a BLAS call (the
  two thread pools hand the cores over);
- the estimate: calls x per-call cost, per kind.
On a loaded host every figure that waits for a second thread grows: report `uptime` with it.
"""
import argparse
import statistics
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

import explorer  # noqa: E402,F401  (isort: skip)  first: sets thread settings before numpy loads
import numpy as np  # noqa: E402

from explorer import kernels  # noqa: E402
from explorer.kernels.matmul import add_bias  # noqa: E402
from explorer.kernels.runtime import using_threads  # noqa: E402
from explorer.lab.bench.blas import blas_pools, describe, rerun_unpinned  # noqa: E402
from explorer.lab.bench.configs import get_config  # noqa: E402
from explorer.lab.bench.gemm import floor_ms, median_seconds, products, time_products  # noqa: E402
from explorer.lab.bench.workers import gemm_peak_worker, make_trainer  # noqa: E402


def _median_us(fn, repeats=2000):
    fn()
    return 1e6 * median_seconds(fn, repeats)


def kernel_calls(trainer):
    """Registry calls of one step, by kernel name."""
    calls = Counter()

    def counting(name, fn):
        def counted(*args):
            calls[name] += 1
            return fn(*args)
        return counted

    wrapped = {n: counting(n, kernels.get(n)) for n in kernels.names() if n != "adamw_update"}
    with kernels.use(**wrapped):
        trainer.step()
    calls["adamw_update"] += 1
    return calls


def per_call_costs(threads, cfg):
    """Microseconds of one near-empty call of each kind, with `threads` threads; and of one
    of the step's own products (attn.proj forward, N x C by C x C) alone and right after a
    Numba parallel call (the BLAS threads were asleep: the hand-over between the two pools)."""
    out1, bias1 = np.zeros((threads, 1), np.float32), np.zeros(1, np.float32)
    a, c = np.ones((8, 8), np.float32), np.empty((8, 8), np.float32)
    N, C = cfg.batch_size * cfg.seq_len, cfg.n_embd
    x, w, y = np.ones((N, C), np.float32), np.ones((C, C), np.float32), np.empty((N, C), np.float32)
    residual = kernels.get("residual_forward")
    tiny = np.zeros((1, 1, 1), np.float32)
    with using_threads(threads):
        serial = _median_us(lambda: residual(tiny, tiny, tiny)) if threads == 1 else None
        parallel = _median_us(lambda: add_bias(out1, bias1))
        blas = _median_us(lambda: np.matmul(a, a, out=c))
        both = _median_us(lambda: (np.matmul(a, a, out=c), add_bias(out1, bias1)))
        product = _median_us(lambda: np.matmul(x, w.T, out=y), repeats=300)
        after = _median_us(lambda: (add_bias(out1, bias1), np.matmul(x, w.T, out=y)), repeats=300) - parallel
    return {f"step product {N}x{C}x{C}, back to back": product,
            f"step product {N}x{C}x{C}, after a Numba parallel call": after,
            "registry+dispatch (1-element residual, 1 thread)": serial,
            "parallel kernel fork/join (add_bias on 1 row per thread)": parallel,
            "BLAS call (8x8 matmul)": blas, "BLAS then Numba parallel": both}


def step_times(trainer, steps, block=5):
    times = {1: [], 2: []}
    for i in range(steps // block):
        for threads in ((1, 2) if i % 2 == 0 else (2, 1)):
            trainer.threads = threads
            times[threads] += [trainer.step()["ms"] for _ in range(block)]
    return {t: statistics.median(v) for t, v in times.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="shakespeare")
    p.add_argument("--steps", type=int, default=20)
    a = p.parse_args(argv)
    code = rerun_unpinned()
    if code is not None:
        return code
    cfg = get_config(a.config)
    print(f"NumPy's BLAS: {describe(blas_pools())}")
    ceiling = gemm_peak_worker((1024, 2048), repeats=3)["gflops"]
    floor = floor_ms(cfg, ceiling)
    trainer = make_trainer(cfg)
    for _ in range(cfg.warmup):
        trainer.step()
    steps = step_times(trainer, a.steps)
    print(f"{a.config}: GEMM ceiling {ceiling:.0f} GFLOP/s, floor {floor:.2f} ms; step with 1 thread "
          f"{steps[1]:.1f} ms ({steps[1] / floor:.1f}x floor), 2 threads {steps[2]:.1f} ms ({steps[2] / floor:.1f}x)")
    for threads in (1, 2):
        with using_threads(threads):
            seconds = time_products("numpy", cfg, repeats=20)
        total = sum(seconds[name] * count for name, *_, count in products(cfg)) * 1e3
        worst = sorted(((2 * m * k * n / seconds[name] / 1e9, name, m, k, n)
                        for name, m, k, n, _, _ in products(cfg)))[:3]
        print(f"  linear products alone, {threads} thread(s): {total:.2f} ms per step; slowest: "
              + "; ".join(f"{name} {m}x{k}x{n} {rate:.0f} GFLOP/s" for rate, name, m, k, n in worst))
    calls = kernel_calls(trainer)
    blas_calls = calls["matmul_forward"] + 2 * calls["matmul_backward"]    # 1 product forward, 2 backward
    print(f"  kernel calls per step: {sum(calls.values())} through the registry "
          f"({', '.join(f'{k} {v}' for k, v in calls.most_common())}); BLAS products {blas_calls}")
    costs = {t: per_call_costs(t, cfg) for t in (1, 2)}
    for kind in costs[1]:
        one, two = costs[1][kind], costs[2][kind]
        print(f"  {kind:58s} 1 thread {one:7.1f} us" + ("" if two is None else f"   2 threads {two:7.1f} us"))
    fork, blas = (costs[2][k] for k in ("parallel kernel fork/join (add_bias on 1 row per thread)",
                                        "BLAS call (8x8 matmul)"))
    launches = sum(calls.values())       # each registry kernel launches at least one parallel loop
    print(f"  estimate, 2 threads: {launches} parallel launches x {fork:.0f} us + {blas_calls} BLAS calls x "
          f"{blas:.0f} us = {(launches * fork + blas_calls * blas) / 1e3:.2f} ms per step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
