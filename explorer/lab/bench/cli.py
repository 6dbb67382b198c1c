"""How fast is a training step? explorer against PyTorch eager and torch.compile, side by side.

The command line: `explorer bench` (explorer/cli.py), `python -m explorer.lab.bench`, and
the entry point of explorer's worker processes (`--worker SPEC`, see workers.py).
"""
import argparse
import json
import sys

from .configs import CONFIGS, get_config
from .report import format_report, write_json
from .runner import parse_variants, run_bench
from .workers import worker_main


def build_parser():
    p = argparse.ArgumentParser(prog="explorer bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", default=",".join(CONFIGS),
                   help=f"comma-separated, from: {', '.join(CONFIGS)} (default: all)")
    p.add_argument("--rounds", type=int, default=3, help="processes per framework and config (default 3)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per process (default: per config)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: per config)")
    p.add_argument("--gemm-sizes", default="1024,2048,3072",
                   help="square matmul sizes for the float32 peak (default 1024,2048,3072)")
    p.add_argument("--json", metavar="PATH", help="also write the full results as JSON")
    p.add_argument("--no-torch", action="store_true", help="time explorer alone")
    p.add_argument("--no-compile", action="store_true", help="leave torch.compile out (eager PyTorch only)")
    p.add_argument("--variant", action="append", default=[], metavar="KERNEL=VARIANT",
                   help="also time explorer with a shipped kernel variant, e.g. matmul_backward=blas2 "
                        "(repeatable); the report prints the default and each variant's ratio to it")
    p.add_argument("--compile-rounds", type=int, default=None,
                   help="rounds that include torch.compile (default: all; each one compiles anew)")
    p.add_argument("--torch-wait-policy", choices=("pytorch", "passive"), default="pytorch",
                   help="PyTorch's OpenMP threads: 'pytorch' keeps its default (spin while waiting), "
                        "'passive' sleeps as explorer's do; use it on a host other processes load")
    p.add_argument("--no-startup", action="store_true", help="skip the start-up measurements")
    p.add_argument("--worker", help=argparse.SUPPRESS)   # internal: run one measurement, print JSON
    return p


def main_bench(argv=None):
    """Entry point of `explorer bench`; returns the exit code."""
    args = build_parser().parse_args(argv)
    if args.worker:
        return worker_main(json.loads(args.worker))
    for number, what in ((args.rounds, "--rounds"), (args.steps, "--steps"), (args.warmup, "--warmup"),
                         (args.compile_rounds, "--compile-rounds")):
        if number is not None and number < 1:
            raise SystemExit(f"{what} must be at least 1, got {number}")
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    try:
        for c in configs:
            get_config(c)
        parse_variants(args.variant)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    try:
        gemm_sizes = tuple(int(n) for n in args.gemm_sizes.split(","))
    except ValueError:
        raise SystemExit(f"--gemm-sizes must be comma-separated integers, got {args.gemm_sizes!r}") from None
    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    report = run_bench(configs, rounds=args.rounds, steps=args.steps, warmup=args.warmup,
                       torch=not args.no_torch, compile=not args.no_compile, startup=not args.no_startup,
                       gemm_sizes=gemm_sizes, compile_rounds=args.compile_rounds,
                       torch_wait_policy=args.torch_wait_policy, variants=args.variant, log=log)
    print(format_report(report))
    if args.json:
        write_json(report, args.json)
        print(f"\nwrote {args.json}")
    return 0
