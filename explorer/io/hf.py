"""Hugging Face GPT-2 interop: our params <-> a GPT2LMHeadModel folder.

    save_hf(model, "my-gpt")        # my-gpt/model.safetensors + my-gpt/config.json
    # then, in PyTorch: transformers.GPT2LMHeadModel.from_pretrained("my-gpt")
    model = load_hf("gpt2-folder")  # e.g. the files of the hub's "gpt2" (124M)

The two models compute the same function; names and one layout differ:
  * names: "blocks.0.attn.qkv.weight" is "transformer.h.0.attn.c_attn.weight", etc.
  * HF's GPT-2 uses Conv1D, which stores a linear layer's weight as (in, out) and computes
    x @ W; we store nn.Linear's (out, in) and compute x @ W.T. So each of the four matrices
    per block is transposed on the way across. q, k, v sit in the same order in both.
  * the LM head is tied to the token embedding in both. HF lists it as "lm_head.weight" in
    model.state_dict() (the same tensor as wte), but save_pretrained leaves it out of the
    file and from_pretrained re-ties it; we write the file the same way.

Only safetensors files are read. A pytorch_model.bin is a pickle, and unpickling can run
arbitrary code, so we refuse it and say how to get a model.safetensors instead.

Hugging Face files carry no checksums: load_hf checks the tensors' names and shapes in the
files' headers against config.json before it allocates anything, refuses NaN and infinite
weights, and warns once per call (NoChecksumWarning) that the values could not be verified.
"""
from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import safetensors.numpy

from ..model.config import GPTConfig
from ..model.gpt import GPT
from .checkpoint import NoChecksumWarning, StrPath, atomic_write, check_finite, check_shapes
from .safetensors_format import (
    float_dtype,
    float_tensor_blocks,
    read_float_tensor_into,
    read_safetensors_header,
)

PREFIX = "transformer."   # GPT2LMHeadModel's body; the hub's gpt2 files omit it
LM_HEAD = "lm_head.weight"
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"   # a checkpoint split into shards
CONFIG_NAME = "config.json"

# our name -> HF name (after "transformer."), outside the blocks
_TOP = {"wte": "wte.weight", "wpe": "wpe.weight",
        "ln_f.weight": "ln_f.weight", "ln_f.bias": "ln_f.bias"}
# per block: our suffix -> (HF suffix, transposed?)
_BLOCK = {
    "ln1.weight": ("ln_1.weight", False),
    "ln1.bias": ("ln_1.bias", False),
    "attn.qkv.weight": ("attn.c_attn.weight", True),
    "attn.qkv.bias": ("attn.c_attn.bias", False),
    "attn.proj.weight": ("attn.c_proj.weight", True),
    "attn.proj.bias": ("attn.c_proj.bias", False),
    "ln2.weight": ("ln_2.weight", False),
    "ln2.bias": ("ln_2.bias", False),
    "mlp.fc.weight": ("mlp.c_fc.weight", True),
    "mlp.fc.bias": ("mlp.c_fc.bias", False),
    "mlp.proj.weight": ("mlp.c_proj.weight", True),
    "mlp.proj.bias": ("mlp.c_proj.bias", False),
}
_BLOCK_FROM_HF = {hf: (ours, t) for ours, (hf, t) in _BLOCK.items()}
_TOP_FROM_HF = {hf: ours for ours, hf in _TOP.items()}
# causal-mask buffers that older transformers saved with the weights: not parameters
_BUFFERS = {"attn.bias", "attn.masked_bias"}


# --------------------------------------------------------------------------- names
def hf_name(name):
    """(HF state-dict key, transposed?) for one of our param names."""
    if name in _TOP:
        return PREFIX + _TOP[name], False
    match = re.fullmatch(r"blocks\.(\d+)\.(.+)", name)
    if match and match.group(2) in _BLOCK:
        hf_suffix, transposed = _BLOCK[match.group(2)]
        return f"{PREFIX}h.{match.group(1)}.{hf_suffix}", transposed
    raise ValueError(f"{name!r} is not a GPT parameter name (expected e.g. 'wte' or "
                     f"'blocks.0.attn.qkv.weight')")


def explorer_name(key):
    """(our param name, transposed?) for an HF key, with or without "transformer.";
    None for the attention-mask buffers, which are not parameters."""
    bare = key[len(PREFIX):] if key.startswith(PREFIX) else key
    if bare in _TOP_FROM_HF:
        return _TOP_FROM_HF[bare], False
    match = re.fullmatch(r"h\.(\d+)\.(.+)", bare)
    if match and match.group(2) in _BUFFERS:
        return None
    if match and match.group(2) in _BLOCK_FROM_HF:
        ours, transposed = _BLOCK_FROM_HF[match.group(2)]
        return f"blocks.{match.group(1)}.{ours}", transposed
    raise ValueError(f"{key!r} is not a GPT-2 parameter this model has (expected keys like "
                     f"'transformer.h.0.attn.c_attn.weight' or 'h.0.attn.c_attn.weight')")


def _numpy(value):
    """A NumPy array from an array or a torch tensor (without importing torch)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def to_hf_state_dict(named_arrays: Mapping[str, Any], *,
                     include_lm_head: bool = False) -> dict[str, np.ndarray]:
    """{HF key: array} for a dict keyed like model.params (params, or grads).

    Conv1D weights come out transposed to (in, out). include_lm_head=True adds
    "lm_head.weight" (a copy of wte), as GPT2LMHeadModel.state_dict() lists it; the file
    save_hf writes leaves it out, as save_pretrained does."""
    out = {}
    for name, value in named_arrays.items():
        key, transposed = hf_name(name)
        array = _numpy(value)
        out[key] = np.ascontiguousarray(array.T if transposed else array)
    if include_lm_head and "wte" in named_arrays:
        out[LM_HEAD] = out[PREFIX + _TOP["wte"]].copy()
    return out


def from_hf_state_dict(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """{our name: array} from an HF GPT-2 state dict (NumPy arrays or torch tensors; keys
    with or without "transformer."). Mask buffers are skipped; "lm_head.weight" must be
    the token embedding itself (tied), since our LM head always is."""
    out, source = {}, {}
    lm_head = None
    for key, value in state_dict.items():
        if key == LM_HEAD:
            lm_head = _numpy(value)
            continue
        mapped = explorer_name(key)
        if mapped is None:
            continue
        name, transposed = mapped
        if name in out:
            raise ValueError(f"both {source[name]!r} and {key!r} hold {name!r}: "
                             f"one state dict should have one of them")
        array = _numpy(value)
        out[name], source[name] = np.ascontiguousarray(array.T if transposed else array), key
    if lm_head is not None:
        if "wte" not in out:
            out["wte"] = lm_head  # tied: the head is the embedding
        elif not np.array_equal(lm_head, out["wte"]):
            raise ValueError("lm_head.weight differs from the token embedding wte.weight: this "
                             "model has an untied output layer, and explorer's GPT ties the two")
    return out


# --------------------------------------------------------------------------- config
def hf_config(config: GPTConfig):
    """A GPT2Config as a JSON-able dict, matching our architecture exactly."""
    gpt2_eot = 50256  # GPT-2 BPE's <|endoftext|>; meaningless for other vocabularies
    eot = gpt2_eot if config.vocab_size > gpt2_eot else None
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_positions": config.block_size,
        "n_ctx": config.block_size,          # older name for n_positions
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": None,                     # None means 4 * n_embd
        "activation_function": "gelu_new",   # GELU, tanh approximation
        "layer_norm_epsilon": 1e-5,
        "initializer_range": 0.02,
        "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,  # we have no dropout
        "summary_first_dropout": 0.0,
        "scale_attn_weights": True,          # scores / sqrt(head_size)
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "add_cross_attention": False,
        "tie_word_embeddings": True,
        "use_cache": True,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "torch_dtype": "float32",
    }


# GPT2Config settings our model does not let vary: (setting, default, allowed values)
_FIXED = [
    ("activation_function", "gelu_new", ("gelu_new", "gelu_pytorch_tanh")),  # both tanh GELU
    ("layer_norm_epsilon", 1e-5, (1e-5,)),        # our layernorm kernel's eps
    ("scale_attn_weights", True, (True,)),        # scores / sqrt(head_size)
    ("scale_attn_by_inverse_layer_idx", False, (False,)),
    ("add_cross_attention", False, (False,)),
    ("tie_word_embeddings", True, (True,)),
]


def config_from_hf(hf: dict, source="config.json"):
    """Our GPTConfig from a GPT2Config dict, refusing variants our model does not compute."""
    if hf.get("model_type", "gpt2") != "gpt2":
        raise ValueError(f"{source}: model_type is {hf['model_type']!r}, expected 'gpt2'")
    for setting, default, allowed in _FIXED:
        value = hf.get(setting, default)
        if value not in allowed or type(value) is not type(default):
            raise ValueError(f"{source}: {setting} is {value!r}, but explorer's GPT computes "
                             f"only {setting} = {' or '.join(map(repr, allowed))}")
    missing = [k for k in ("n_layer", "n_head", "n_embd", "vocab_size") if k not in hf]
    if "n_positions" not in hf and "n_ctx" not in hf:
        missing.append("n_positions")
    if missing:
        raise ValueError(f"{source} has no {missing}; a GPT-2 config needs n_layer, n_head, "
                         f"n_embd, vocab_size and n_positions")
    n_embd, n_inner = hf["n_embd"], hf.get("n_inner")
    if n_inner is not None and n_inner != 4 * n_embd:
        raise ValueError(f"{source}: n_inner is {n_inner!r}, but explorer's GPT has an MLP of "
                         f"4 * n_embd = {4 * n_embd} (n_inner null or that)")
    try:
        return GPTConfig(n_layer=hf["n_layer"], n_head=hf["n_head"], n_embd=n_embd,
                         vocab_size=hf["vocab_size"],
                         block_size=hf.get("n_positions", hf.get("n_ctx")))
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from err


# --------------------------------------------------------------------------- files
def save_hf(model: GPT, folder: StrPath) -> str:
    """Write `folder`/model.safetensors and `folder`/config.json so that
    transformers.GPT2LMHeadModel.from_pretrained(folder) rebuilds this model."""
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    with model.lock:  # a consistent copy even while a trainer runs
        tensors = to_hf_state_dict(model.params)
    # from_pretrained insists on this metadata entry to know the tensors are PyTorch's layout
    atomic_write(os.path.join(folder, WEIGHTS_NAME),
                 lambda tmp: safetensors.numpy.save_file(tensors, tmp, metadata={"format": "pt"}))
    text = json.dumps(hf_config(model.config), indent=2) + "\n"
    atomic_write(os.path.join(folder, CONFIG_NAME), lambda tmp: _write_text(tmp, text))
    return folder


def _write_text(path, text):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def load_hf(folder: StrPath, *, verified: bool = False) -> GPT:
    """A GPT from a Hugging Face GPT-2 folder (config.json + model.safetensors, or a
    sharded model.safetensors.index.json), e.g. the hub's gpt2 124M files.

    The weights are read straight into the model's flat parameter buffer, tensor by tensor:
    besides the model, loading holds one block of at most 16 MiB (a transposed or converted
    tensor passes through such blocks), so GPT-2 XL's 6.2 GB load in about 6.2 GB.

    verified=True: the caller checked the files' bytes against digests it trusts (as
    explorer.pretrained does with the hub's sha256), so no NoChecksumWarning is issued."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"no such folder: {folder} (load_hf expects the folder that "
                                f"holds config.json and model.safetensors)")
    config_path = os.path.join(folder, CONFIG_NAME)
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"{folder} has no {CONFIG_NAME}: it is needed for n_head and the "
                                f"other settings the weights alone do not tell")
    config = config_from_hf(read_config(config_path), config_path)
    headers = {path: read_safetensors_header(path) for path in _weight_files(folder)}
    try:  # from the files' headers, before anything the size of the model is allocated
        sources, lm_head = _sources(headers)
        check_shapes({name: _our_shape(headers[path][key]["shape"], transposed)
                      for name, (path, key, transposed) in sources.items()}, config)
    except ValueError as err:
        raise ValueError(f"the weights in {folder} do not match its {CONFIG_NAME}: {err}") from err
    for path, key, _ in sources.values():
        float_dtype(path, key, headers[path][key])
    model = GPT(config, init=False)   # zeros, each overwritten below
    _read_params(model, headers, sources)
    if lm_head is not None and lm_head != sources["wte"][:2]:
        _check_tied(model, headers, *lm_head)
    if not verified:
        warnings.warn(f"{folder} is a Hugging Face folder, whose files have no explorer checksums: "
                      f"its weights were loaded unverified (their names, shapes and that every "
                      f"value is finite were checked)", NoChecksumWarning, stacklevel=2)
    return model


def _read_json(path):
    """The value in a JSON file; ValueError naming the file when it is not JSON."""
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON ({err})") from err


def read_config(config_path):
    """The dict in a config.json."""
    config = _read_json(config_path)
    if not isinstance(config, dict):
        raise ValueError(f"{config_path} holds a JSON {type(config).__name__}, expected an object "
                         f"of settings such as {{\"model_type\": \"gpt2\", \"n_layer\": 12, ...}}")
    return config


def _sources(headers):
    """({our param name: (file, key, transposed?)}, (file, key) of "lm_head.weight" or None)
    from the files' headers. The mask buffers are skipped; a file that holds the LM head but
    not wte gives wte from the head (tied: they are one matrix)."""
    sources, lm_head = {}, None
    for path, header in headers.items():
        for key in header:
            if key == "__metadata__":
                continue
            if key == LM_HEAD:
                lm_head = (path, key)
                continue
            mapped = explorer_name(key)
            if mapped is None:
                continue
            name, transposed = mapped
            if name in sources:
                raise ValueError(f"both {sources[name][1]!r} and {key!r} hold {name!r}: "
                                 f"one state dict should have one of them")
            sources[name] = (path, key, transposed)
    if lm_head is not None and "wte" not in sources:
        sources["wte"] = (*lm_head, False)
    return sources, lm_head


def _our_shape(shape, transposed):
    return tuple(reversed(shape)) if transposed else tuple(shape)


def _read_params(model, headers, sources):
    """Fill model.params from the files, each file read once, front to back."""
    by_file = {}
    for name, (path, key, transposed) in sources.items():
        by_file.setdefault(path, []).append((headers[path][key]["data_offsets"][0], key, name,
                                             transposed))
    for path, tensors in by_file.items():
        with open(path, "rb") as f:
            for _, key, name, transposed in sorted(tensors):
                # HF's Conv1D stores (in, out): read into the transposed view of our (out, in)
                out = model.params[name].T if transposed else model.params[name]
                read_float_tensor_into(f, path, key, headers[path][key], out)
                check_finite(out, key, path)


def _check_tied(model, headers, path, key):
    """Refuse an "lm_head.weight" that is not the token embedding, block by block."""
    wte = model.params["wte"]
    info = headers[path][key]
    if tuple(info["shape"]) != wte.shape:
        raise ValueError(f"{path}: {key!r} has shape {tuple(info['shape'])}, but the token "
                         f"embedding wte has {wte.shape}; explorer's GPT ties the two")
    with open(path, "rb") as f:
        for first, block in float_tensor_blocks(f, path, key, info):
            if not np.array_equal(block, wte[first:first + len(block)]):
                raise ValueError("lm_head.weight differs from the token embedding wte.weight: this "
                                 "model has an untied output layer, and explorer's GPT ties the two")


def _weight_files(folder):
    """The safetensors files holding the weights: model.safetensors, or the shards its
    index names."""
    single = os.path.join(folder, WEIGHTS_NAME)
    if os.path.isfile(single):
        return [single]
    index = os.path.join(folder, INDEX_NAME)
    if os.path.isfile(index):
        return [os.path.join(folder, shard) for shard in shards_of(index)]
    pickle_suffixes = (".bin", ".pt", ".pth", ".ckpt")
    pickles = [n for n in sorted(os.listdir(folder)) if n.endswith(pickle_suffixes)]
    if pickles:
        raise ValueError(
            f"{folder} has only {pickles}, PyTorch pickle files, and explorer never unpickles: "
            f"loading a pickle can run any code the file contains. Download {WEIGHTS_NAME} "
            f"(the hub's gpt2 repository has one), or convert a file you trust with "
            f"transformers: GPT2LMHeadModel.from_pretrained(folder).save_pretrained(folder)")
    raise FileNotFoundError(f"{folder} has no {WEIGHTS_NAME} (nor {INDEX_NAME})")


def shards_of(index):
    """The shard file names an index lists under "weight_map" ({tensor name: file name})."""
    data = _read_json(index)
    expected = ('a "weight_map" object {tensor name: shard file name}, as transformers\' '
                'save_pretrained writes it')
    if not isinstance(data, dict) or "weight_map" not in data:
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{index} has no \"weight_map\" (it has {keys}); expected {expected}")
    weight_map = data["weight_map"]
    if (not isinstance(weight_map, dict) or not weight_map
            or not all(isinstance(v, str) for v in weight_map.values())):
        raise ValueError(f"{index}: \"weight_map\" is {weight_map!r:.100}, expected {expected}")
    return sorted(set(weight_map.values()))
