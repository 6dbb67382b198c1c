"""Run `explorer bench` from a checkout, without installing the package:

    python benchmarks/bench_step.py --configs tiny,small,124m --rounds 3 --json results.json

Same options as `explorer bench` (see `--help`).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from explorer.lab.bench.cli import main_bench  # noqa: E402  (explorer first: it sets thread settings)

if __name__ == "__main__":
    sys.exit(main_bench())
