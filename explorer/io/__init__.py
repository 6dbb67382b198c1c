"""Files in and out: safetensors checkpoints, Hugging Face folders, llm.c files, the hub.

Imports the model floor only.
"""
from .checkpoint import Checkpoint, NoChecksumWarning, load, load_params, save
from .hf import from_hf_state_dict, load_hf, save_hf, to_hf_state_dict
from .hub import pretrained
from .llmc import load_llmc, save_llmc

__all__ = ["Checkpoint", "NoChecksumWarning", "from_hf_state_dict", "load", "load_hf", "load_llmc",
           "load_params", "pretrained", "save", "save_hf", "save_llmc", "to_hf_state_dict"]
