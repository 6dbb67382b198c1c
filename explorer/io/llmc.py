"""llm.c checkpoints: the gpt2_124M.bin file that llm.c's train_gpt2.c reads and writes.

    save_llmc(model, "gpt2_124M.bin")   # then: ./train_gpt2 in llm.c can start from it
    model = load_llmc("gpt2_124M.bin")  # e.g. the file llm.c's train_gpt2.py exports

The layout is a header of 256 little-endian int32s, then every parameter as raw floats:
    header[0] = 20240326 (magic), [1] = version, [2] = maxT (block_size), [3] = V,
    [4] = L, [5] = NH, [6] = C, [7] = Vp (version 3+: V rounded up to a multiple of 128)
    then wte (Vp, C), wpe (maxT, C), ln1w (L, C), ln1b (L, C), qkvw (L, 3C, C), qkvb (L, 3C),
    attprojw (L, C, C), attprojb (L, C), ln2w, ln2b (L, C), fcw (L, 4C, C), fcb (L, 4C),
    fcprojw (L, C, 4C), fcprojb (L, C), lnfw (C), lnfb (C)
Versions: 1 and 2 are float32 with an unpadded wte (V, C); 3 is float32 with wte padded to
Vp rows (zeros past V, which llm.c's softmax never reads); 5 is 3 in bfloat16.

Our model.flat_params is in exactly this order (it was designed after llm.c), with an
unpadded wte: so writing is "wte, some zero rows, the rest of the buffer".

The format has no checksums: load_llmc checks the file's size against its header before
it allocates anything, refuses NaN and infinite weights, and warns once (NoChecksumWarning)
that the values could not be verified.
"""
import math
import os
import warnings

import numpy as np

from ..model.config import BLOCK_PARAMS, GPTConfig, param_shapes
from ..model.gpt import GPT
from .checkpoint import NoChecksumWarning, StrPath, atomic_write, check_finite, load_params

MAGIC = 20240326
HEADER_INTS = 256             # 1024 bytes
VOCAB_MULTIPLE = 128          # llm.c pads the vocabulary for faster kernels
SAVE_VERSION = 3
# version -> (dtype on disk, is wte padded to Vp?)
VERSIONS = {1: ("float32", False), 2: ("float32", False), 3: ("float32", True),
            5: ("bfloat16", True)}
# other llm.c files, to say what a wrong file is rather than just "bad magic"
OTHER_MAGICS = {20240327: "an llm.c debug state file (inputs, logits and gradients)",
                20240328: "an llm.c tokenizer file", 20240520: "an llm.c token data shard",
                20240803: "an llm.c Llama 3 model file"}


def padded_vocab_size(vocab_size, multiple=VOCAB_MULTIPLE):
    """V rounded up to a multiple of 128: 50257 -> 50304."""
    return -(-vocab_size // multiple) * multiple


def save_llmc(model: GPT, path: StrPath) -> str:
    """Write `model` as an llm.c version-3 (float32, padded vocab) checkpoint."""
    cfg = model.config
    V, C = cfg.vocab_size, cfg.n_embd
    Vp = padded_vocab_size(V)
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:8] = [MAGIC, SAVE_VERSION, cfg.block_size, V, cfg.n_layer, cfg.n_head, C, Vp]
    with model.lock:  # a consistent copy even while a trainer runs
        flat = model.flat_params.astype("<f4")  # (a copy)
    padding = np.zeros((Vp - V) * C, dtype="<f4")

    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(header.tobytes())
            f.write(flat[:V * C].tobytes())   # wte (V, C)
            f.write(padding.tobytes())        # rows V..Vp-1 of the padded wte
            f.write(flat[V * C:].tobytes())   # wpe, the blocks' params, ln_f: as in our buffer
    atomic_write(path, write)
    return os.fspath(path)


def read_llmc_header(path):
    """The header as a dict: version, config (GPTConfig), padded_vocab_size, dtype."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path}")
    size = os.path.getsize(path)
    if size < 4 * HEADER_INTS:
        raise ValueError(f"{path} is too short for an llm.c checkpoint: {size} bytes, but the "
                         f"header alone is {4 * HEADER_INTS}")
    header = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
    magic, version = int(header[0]), int(header[1])
    if magic != MAGIC:
        what = OTHER_MAGICS.get(magic, "not an llm.c GPT-2 checkpoint")
        raise ValueError(f"{path} has magic number {magic}, expected {MAGIC}: it is {what}")
    if version not in VERSIONS:
        raise ValueError(f"{path} is llm.c checkpoint version {version}; explorer reads versions "
                         f"{sorted(VERSIONS)}")
    maxT, V, L, NH, C = (int(x) for x in header[2:7])
    try:
        config = GPTConfig(n_layer=L, n_head=NH, n_embd=C, vocab_size=V, block_size=maxT)
    except ValueError as err:
        raise ValueError(f"{path} has an impossible header (maxT={maxT}, V={V}, L={L}, NH={NH}, "
                         f"C={C}): {err}") from err
    dtype, padded = VERSIONS[version]
    Vp = int(header[7]) if padded else V
    if Vp < V:
        raise ValueError(f"{path}: padded vocab size Vp={Vp} (header[7]) is smaller than V={V}")
    return {"version": version, "config": config, "padded_vocab_size": Vp, "dtype": dtype}


def load_llmc(path: StrPath) -> GPT:
    """A GPT from an llm.c checkpoint (versions 1, 2, 3 and 5; see the module docstring)."""
    path = os.fspath(path)
    info = read_llmc_header(path)
    cfg, Vp = info["config"], info["padded_vocab_size"]
    count = floats_in_file(cfg, Vp)
    itemsize = 2 if info["dtype"] == "bfloat16" else 4
    expected, size = 4 * HEADER_INTS + count * itemsize, os.path.getsize(path)
    if size != expected:  # checked from the header's numbers alone: nothing allocated yet
        problem = "is truncated" if size < expected else "is too long"
        raise ValueError(f"{path} {problem}: a version-{info['version']} file of {cfg} "
                         f"(Vp={Vp}) has {expected} bytes, this one has {size}")
    values = _read_floats(path, count, info["dtype"])
    named = _split_params(values, cfg, Vp)
    for name, array in named.items():
        check_finite(array, name, path)
    warnings.warn(f"{path} is an llm.c checkpoint, a format without checksums: its weights "
                  f"were loaded unverified (its size and that every value is finite were "
                  f"checked)", NoChecksumWarning, stacklevel=2)
    return load_params(GPT(cfg), named)


def floats_in_file(config, padded_vocab_size):
    """How many numbers an llm.c file of `config` holds: wte padded to Vp rows, wpe, the
    blocks, ln_f. Arithmetic only, so a header claiming 60 GB costs nothing to check."""
    C, L = config.n_embd, config.n_layer
    per_block = sum(math.prod(shape(C)) for _, shape in BLOCK_PARAMS)
    return padded_vocab_size * C + config.block_size * C + L * per_block + 2 * C


def _split_params(values, config, padded_vocab_size):
    """{param name: view of `values`} in llm.c's order, skipping wte's padding rows."""
    named, offset = {}, 0
    for name, shape in param_shapes(config):
        named[name] = values[offset:offset + math.prod(shape)].reshape(shape)
        offset += padded_vocab_size * config.n_embd if name == "wte" else math.prod(shape)
    return named


def _read_floats(path, count, dtype):
    offset = 4 * HEADER_INTS
    if dtype == "float32":
        return np.fromfile(path, dtype="<f4", count=count, offset=offset)
    # bfloat16 is the top half of a float32: shift its 16 bits up to get the float32 back
    halves = np.fromfile(path, dtype="<u2", count=count, offset=offset)
    return (halves.astype(np.uint32) << 16).view(np.float32)
