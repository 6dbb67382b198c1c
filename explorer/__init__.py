"""Transformer Explorer: see and change how a GPT learns."""
from . import _runtime  # noqa: F401  (must run before numpy/numba start their thread pools)
from . import kernels
from .config import GPTConfig
from .model import GPT
from .trainer import TrainConfig, Trainer
from .checkpoint import Checkpoint, load, load_params, save
from .hf import from_hf_state_dict, load_hf, save_hf, to_hf_state_dict
from .llmc import load_llmc, save_llmc
from .data import TextDataset, load_text, make_task, text_dataset
from .tokenizers import (BPETokenizer, CharTokenizer, GPT2Tokenizer, get_tokenizer,
                         tokenizer_from_dict, train_bpe)
from .presets import PRESETS, get_preset
from .lab import KernelLab, check_kernel

__all__ = ["GPT", "GPTConfig", "TrainConfig", "Trainer", "kernels",
           "save", "load", "Checkpoint", "load_params",
           "save_hf", "load_hf", "to_hf_state_dict", "from_hf_state_dict",
           "save_llmc", "load_llmc",
           "TextDataset", "load_text", "make_task", "text_dataset",
           "BPETokenizer", "CharTokenizer", "GPT2Tokenizer", "get_tokenizer", "tokenizer_from_dict",
           "train_bpe", "PRESETS", "get_preset", "check_kernel", "KernelLab"]
__version__ = "0.1.0"
