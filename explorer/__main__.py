"""python -m explorer: the same as the `explorer` command."""
import sys

from .cli import main

sys.exit(main())
