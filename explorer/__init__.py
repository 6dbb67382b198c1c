"""Transformer Explorer: see and change how a GPT learns."""
from . import _runtime  # noqa: F401  (must run before numpy/numba start their thread pools)
from . import kernels
from .config import GPTConfig
from .model import GPT
from .trainer import TrainConfig, Trainer

__all__ = ["GPT", "GPTConfig", "TrainConfig", "Trainer", "kernels"]
__version__ = "0.1.0"
