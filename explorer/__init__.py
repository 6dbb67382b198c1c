"""Transformer Explorer: see and change how a GPT learns."""
# The thread-pool policy (explorer.kernels.runtime) must be set before NumPy or Numba start threads.
from .kernels import runtime as _runtime  # noqa: F401

# isort: split
from . import kernels
from .model import GPT, Decoder, GPTConfig
from .train import TrainConfig, Trainer

# The rest loads on first use (PEP 562), so that `import explorer` + a first training step stays
# quick: checkpoints, formats, data, tokenizers, presets and the kernel lab add ~0.2 s of imports.
_LAZY = {
    "io": ["Checkpoint", "load", "load_params", "save",
           "from_hf_state_dict", "load_hf", "save_hf", "to_hf_state_dict",
           "load_llmc", "save_llmc", "pretrained"],
    "data": ["TextDataset", "load_text", "make_task", "text_dataset"],
    "tokenizers": ["BPETokenizer", "CharTokenizer", "GPT2Tokenizer", "get_tokenizer",
                   "tokenizer_from_dict", "train_bpe"],
    "train.presets": ["PRESETS", "get_preset"],
    "interp": [],
    "lab": ["KernelLab", "check_kernel"],
    "viz": [],
    "course": [],
}
_HOME = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name):
    """explorer.save, explorer.lab, ...: import the module that holds it on first use."""
    import importlib

    if name in _LAZY and "." not in name:
        return importlib.import_module(f".{name}", __name__)
    if name in _HOME:
        value = getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'explorer' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | {m for m in _LAZY if "." not in m} | set(_HOME))


__all__ = ["GPT", "GPTConfig", "Decoder", "TrainConfig", "Trainer", "kernels", "pretrained",
           "save", "load", "Checkpoint", "load_params",
           "save_hf", "load_hf", "to_hf_state_dict", "from_hf_state_dict",
           "save_llmc", "load_llmc",
           "TextDataset", "load_text", "make_task", "text_dataset",
           "BPETokenizer", "CharTokenizer", "GPT2Tokenizer", "get_tokenizer", "tokenizer_from_dict",
           "train_bpe", "PRESETS", "get_preset", "check_kernel", "KernelLab"]
__version__ = "0.1.0"
