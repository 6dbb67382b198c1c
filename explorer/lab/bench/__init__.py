"""How fast is a training step? explorer against PyTorch eager, side by side.

    explorer bench --configs tiny,small --rounds 3          # the CLI
    python -m explorer.lab.bench --configs tiny --rounds 1  # the same, without the CLI
    python benchmarks/profile_step.py --configs tiny        # where explorer's time goes

A training step is forward + backward + gradient clipping + AdamW, on random tokens. Each
framework runs in its own process (so neither sees the other's thread pools or caches),
warms up first (Numba compiles and starts its threads), then times `steps` steps. Rounds
alternate explorer and PyTorch processes, so a noisy neighbour slows both alike.

The work per step is counted in FLOPs as in the GPT-2 / llm.c papers (configs.step_flops);
dividing it by the step time gives GFLOP/s, which we compare with the best float32 matrix
multiply NumPy's BLAS reaches on this machine, measured in the same run.

PyTorch is optional: without it (or without the repository's benchmarks/ folder, which
holds the PyTorch model) the bench times explorer alone and says so.

The modules, one idea each:
    configs.py  what is measured: the model configs, a step's FLOPs, random tokens
    workers.py  what runs inside a worker process (a timed step, the GEMM peak, start-up)
    launch.py   starting worker processes, explorer's and PyTorch's, and reading their results
    runner.py   the benchmark: rounds of alternating processes, summarised
    report.py   the results as a text table, and as JSON
    cli.py      `explorer bench` and `python -m explorer.lab.bench` (also the worker's entry)
"""
from .cli import main_bench
from .configs import CONFIGS, BenchConfig, RandomTokens, count_params, get_config, step_flops
from .report import format_report, write_json
from .runner import run_bench

__all__ = ["BenchConfig", "CONFIGS", "RandomTokens", "count_params", "format_report", "get_config",
           "main_bench", "run_bench", "step_flops", "write_json"]
