"""The model floor: a typed config, the GPT (buffers, forward, backward) and generation
(generate, and Decoder: a KV-cached decode session one token at a time).

Imports only `explorer.kernels`: every op the model runs goes through the kernel registry.
"""
from .config import GPTConfig
from .generate import Decoder
from .gpt import GPT

__all__ = ["GPT", "GPTConfig", "Decoder"]
