"""How fast can a step be when its matrix products run at BLAS speed and everything else is free?

    python benchmarks/gemm_ceiling.py --configs tiny,small,124m --rounds 3

Every matrix product of one training step (forward, and both products of the backward pass,
per layer and for the LM head) is timed on its own, with the same shapes and memory layouts
explorer's matmul kernels pass to NumPy, and, for comparison, with PyTorch's matmul (its own
BLAS, MKL on x86 wheels). Each library runs in its own process with its own thread settings;
rounds alternate the two. The sum over one step's products is a floor for the step time of
any implementation that uses that library for its products, and F / floor is the highest
share of the GEMM peak a step could reach (F as in explorer/lab/bench/configs.py).

The products here run with warm caches, one after another; inside a real step their inputs
come from other kernels, so the floor is optimistic.
"""
import argparse
import json
import statistics
import sys
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from explorer.lab.bench.gemm import gemm_flops, operands, products, time_products  # noqa: E402,F401


def worker(lib, config, repeats):
    """Median seconds of each product, in this process."""
    if lib == "numpy":
        import explorer  # noqa: F401  (explorer's thread settings for OpenBLAS, as in a step)
    else:
        import torch

    from explorer.lab.bench.configs import BenchConfig
    from explorer.lab.bench.workers import usable_cores

    if lib == "torch":
        torch.set_num_threads(usable_cores())
    return time_products(lib, BenchConfig(**config), repeats)


def _run(lib, config, repeats):
    """One worker process; PyTorch's runs without explorer's thread settings, as in the bench."""
    from explorer.lab.bench.launch import run_worker, torch_env

    cmd = [sys.executable, __file__, "--worker", json.dumps({"lib": lib, "config": config, "repeats": repeats})]
    return run_worker(cmd, env=torch_env() if lib == "torch" else None)


def main(argv=None):
    from explorer.lab.bench.blas import cpu_flags, describe, kernel_warnings
    from explorer.lab.bench.configs import get_config, step_flops
    from explorer.lab.bench.launch import measure_gemm_peak, torch_available
    from explorer.lab.bench.workers import RESULT_MARK

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", default="tiny,small,124m")
    p.add_argument("--rounds", type=int, default=3, help="processes per library and config, alternating")
    p.add_argument("--repeats", type=int, default=15, help="timed calls of each product per process")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        print(RESULT_MARK + json.dumps(worker(spec["lib"], spec["config"], spec["repeats"])))
        return 0
    libs = ["numpy"] if args.no_torch or torch_available() else ["numpy", "torch"]
    measured = measure_gemm_peak()          # workers run without the OpenBLAS pins (launch.run_worker)
    peak = measured["gflops"]
    print(f"GEMM peak (NumPy, square sizes): {peak:.1f} GFLOP/s; NumPy's BLAS: {describe(measured['blas'])}")
    for warning in kernel_warnings(measured["blas"], cpu_flags()):
        print(warning)
    for name in args.configs.split(","):
        cfg = get_config(name)
        runs = {lib: [] for lib in libs}
        for r in range(args.rounds):
            for lib in (libs if r % 2 == 0 else libs[::-1]):
                runs[lib].append(_run(lib, asdict(cfg), args.repeats))
        flops = step_flops(cfg)
        print(f"\n{name}: F = {flops / 1e9:.2f} GFLOP per step; products (medians over {args.rounds} processes)")
        header = " ".join(f"{lib + ' GF/s':>11}" for lib in libs)
        print(f"  {'product':<20} {'m':>6} {'k':>6} {'n':>6} {'x/step':>6} " + header)
        floor = {lib: 0.0 for lib in libs}
        for pname, m, k, n, _how, count in products(cfg):
            rates = []
            for lib in libs:
                s = statistics.median(run[pname] for run in runs[lib])
                floor[lib] += count * s
                rates.append(f"{2 * m * k * n / s / 1e9:>11.1f}")
            print(f"  {pname:<20} {m:>6} {k:>6} {n:>6} {count:>6} " + " ".join(rates))
        for lib in libs:
            rate = flops / floor[lib] / 1e9
            print(f"  {lib}: all products of a step {floor[lib] * 1e3:.1f} ms; a step that took only that "
                  f"would run at {rate:.1f} GFLOP/s = {100 * rate / peak:.0f}% of peak")
    return 0


if __name__ == "__main__":
    sys.exit(main())
