"""The model floor: a typed config, the GPT (buffers, forward, backward) and generation.

Imports only `explorer.kernels`: every op the model runs goes through the kernel registry.
"""
from .config import GPTConfig
from .gpt import GPT

__all__ = ["GPT", "GPTConfig"]
