"""`python -m explorer.lab.bench`: the same as `explorer bench` (and how workers are started)."""
import sys

from .cli import main_bench

if __name__ == "__main__":
    sys.exit(main_bench())
