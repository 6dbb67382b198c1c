"""Checkpoints: a model (and a trainer's optimizer state) in one safetensors file.

    save(model_or_trainer, "run.safetensors", tokenizer=tok)
    ckpt = load("run.safetensors")        # Checkpoint(model, step, optimizer_arrays, ...)
    ckpt.restore(trainer)                 # put params + optimizer state back into a trainer

Why safetensors and not pickle (torch.save, np.save(allow_pickle=True)): unpickling runs
whatever code the file asks for, so opening a stranger's checkpoint is running a stranger's
program. A safetensors file is a JSON header (names, dtypes, shapes, byte offsets) followed
by raw little-endian numbers: reading one can only ever give you arrays.

Layout of our file:
    tensors   "wte", "blocks.0.ln1.weight", ...  the model's params, under model.params names
              "optimizer.<name>"                  the trainer's arrays (e.g. AdamW's m and v)
    metadata  {"explorer": "<JSON>"}  with the format name and version, the GPTConfig, the
              step, the trainer's own metadata and the tokenizer (or null)

Every write goes to a temporary file in the same folder first, is flushed to disk, and
only then renamed over the target: a crash mid-save leaves the old file, never half a file.
"""
import json
import os
import uuid
from dataclasses import dataclass, field

import numpy as np
import safetensors.numpy

from ._runtime import compute_lock
from .config import GPTConfig
from .model import GPT

FORMAT_NAME = "transformer-explorer-checkpoint"
FORMAT_VERSION = 1
METADATA_KEY = "explorer"          # the one safetensors metadata entry we use
OPTIMIZER_PREFIX = "optimizer."    # tensor-name prefix of the trainer's arrays


@dataclass
class Checkpoint:
    """What load() found in a checkpoint file."""
    model: GPT                      # built from the saved config, params loaded
    step: int | None                # training steps taken (None: saved from a bare model)
    optimizer_arrays: dict = field(default_factory=dict)  # name -> array, {} for a bare model
    trainer_meta: dict = field(default_factory=dict)      # the trainer's own metadata, or {}
    tokenizer: dict | None = None   # tokenizer.to_dict() at save time, if there was one
    metadata: dict = field(default_factory=dict)          # the whole decoded JSON header
    path: str | None = None         # the file it was read from

    @property
    def config(self) -> GPTConfig:
        return self.model.config

    def restore(self, trainer):
        """Copy the params into trainer.model and hand the optimizer state to the trainer.
        Everything is checked first: a bad file raises (naming it and what is wrong) and
        leaves the trainer exactly as it was."""
        source = f"checkpoint {self.path}" if self.path else "the checkpoint"
        if trainer.model.config != self.config:
            raise ValueError(f"{source} holds the model {self.config}, but the trainer's is "
                             f"{trainer.model.config}: build the trainer around ckpt.model instead")
        if self.step is None or not self.optimizer_arrays:
            raise ValueError(f"{source} holds a model only (saved from a GPT, not a trainer): it "
                             f"has no optimizer state to resume. Train from its weights with "
                             f"Trainer(ckpt.model, data, ...) instead")
        params = self.model.params
        for name, array in params.items():
            bad = int(array.size - np.count_nonzero(np.isfinite(array)))
            if bad:
                raise ValueError(f"{source}: parameter {name!r} holds {bad} NaN or Inf values")
        with compute_lock:
            state = trainer.check_state(self.optimizer_arrays, self.trainer_meta, source)
            load_params(trainer.model, params)
            trainer.put_state(state)


# --------------------------------------------------------------------------- saving
def save(obj, path, *, tokenizer=None):
    """Write a GPT, or a trainer (anything with .model and .checkpoint_state()), to `path`.

    tokenizer: an object with to_dict(), or such a dict; if None, a trainer's
    trainer.data.tokenizer is used when it has one. Returns the path written."""
    path = os.fspath(path)
    with compute_lock:  # no training step may run between copying params and optimizer state
        model, arrays, trainer_meta = _unpack(obj)
        tensors = {name: p.copy() for name, p in model.params.items()}
    for name, array in arrays.items():
        tensors[OPTIMIZER_PREFIX + name] = _tensor(array, f"optimizer array {name!r}")
    header = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "package_version": _package_version(),
        "config": model.config.to_dict(),
        "step": _step_of(obj, trainer_meta),
        "trainer": trainer_meta,
        "tokenizer": _tokenizer_dict(tokenizer, obj),
    }
    metadata = {METADATA_KEY: _to_json(header)}
    atomic_write(path, lambda tmp: safetensors.numpy.save_file(tensors, tmp, metadata=metadata))
    return path


def _unpack(obj):
    """(model, optimizer arrays, trainer metadata) of a GPT or a trainer."""
    if isinstance(obj, GPT):
        return obj, {}, None
    if hasattr(obj, "model") and hasattr(obj, "checkpoint_state"):
        if not isinstance(obj.model, GPT):
            raise TypeError(f"trainer.model must be a GPT, got {type(obj.model).__name__}")
        arrays, meta = obj.checkpoint_state()
        arrays = {name: np.array(a) for name, a in arrays.items()}  # copies: training goes on
        if not isinstance(meta, dict):
            raise TypeError(f"checkpoint_state() must return (arrays, dict), got metadata of "
                            f"type {type(meta).__name__}")
        return obj.model, arrays, meta
    raise TypeError(f"save() expects a GPT or a trainer (an object with .model and "
                    f".checkpoint_state()), got {type(obj).__name__}")


def _tensor(array, what):
    array = np.ascontiguousarray(array)
    if array.dtype == object:
        raise TypeError(f"{what} holds Python objects (dtype object); only numeric arrays can "
                        f"be saved")
    return array


def _step_of(obj, trainer_meta):
    if trainer_meta is None:
        return None
    step = trainer_meta.get("step", getattr(obj, "step_count", None))
    return None if step is None else int(step)


def _tokenizer_dict(tokenizer, obj):
    if tokenizer is None:  # a trainer may know its data's tokenizer
        tokenizer = getattr(getattr(obj, "data", None), "tokenizer", None)
        if not hasattr(tokenizer, "to_dict"):
            return None
    if isinstance(tokenizer, dict):
        return tokenizer
    if not hasattr(tokenizer, "to_dict"):
        raise TypeError(f"tokenizer must have a to_dict() method (or be a dict), got "
                        f"{type(tokenizer).__name__}")
    return tokenizer.to_dict()


def _to_json(header):
    def plain(value):  # NumPy scalars and small arrays sneak into metadata dicts
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
        raise TypeError(f"checkpoint metadata must be JSON-serialisable; found a "
                        f"{type(value).__name__}: {value!r:.80}")
    return json.dumps(header, default=plain, allow_nan=True)


def _package_version():
    import explorer  # at call time: explorer/__init__ may still be importing us
    return getattr(explorer, "__version__", None)


def atomic_write(path, write):
    """Call write(tmp_path) to create a file beside `path`, fsync it, then rename it onto
    `path`. If anything fails, the temporary file is removed and `path` is untouched."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot write {path}: the folder {folder} does not exist")
    if os.path.isdir(path):
        raise IsADirectoryError(f"cannot write {path}: it is a folder, expected a file name")
    remove_stale_temps(path)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDWR)
        try:
            os.fsync(fd)      # the bytes are on disk before the name points at them
        finally:
            os.close(fd)
        os.replace(tmp, path)  # atomic on POSIX and Windows
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_folder(folder)
    return path


def remove_stale_temps(path):
    """Delete the temporary files that interrupted writes of `path` left behind (a killed
    process never reaches atomic_write's clean-up). A temporary file is stale when the
    process named in it has exited; one of a live process is a write in progress."""
    folder = os.path.dirname(os.path.abspath(path))
    prefix = f".{os.path.basename(path)}."
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        pid = name[len(prefix):-len(".tmp")].split("-")[0]
        if pid.isdigit() and (int(pid) == os.getpid() or _process_alive(int(pid))):
            continue
        try:
            os.remove(os.path.join(folder, name))
        except OSError:
            pass


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:         # e.g. another user's process: alive
        return True
    return True


def _fsync_folder(folder):
    """Make the rename itself durable (POSIX only; Windows cannot open folders)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- loading
def load(path) -> Checkpoint:
    """Read a checkpoint written by save(). Raises FileNotFoundError or ValueError saying
    what is wrong with the file (truncated, not ours, wrong version, missing tensor, ...)."""
    arrays, metadata = read_safetensors(path)
    header = _parse_header(metadata, path)
    try:
        config = GPTConfig.from_dict(header["config"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"checkpoint {path} has an invalid model config "
                         f"{header['config']!r}: {err}") from err
    params = {k: v for k, v in arrays.items() if not k.startswith(OPTIMIZER_PREFIX)}
    optimizer = {k[len(OPTIMIZER_PREFIX):]: v for k, v in arrays.items()
                 if k.startswith(OPTIMIZER_PREFIX)}
    for name, array in params.items():
        if array.dtype != np.float32:
            raise ValueError(f"checkpoint {path}: tensor {name!r} is {array.dtype}, "
                             f"expected float32")
    model = GPT(config)
    try:
        load_params(model, params)
    except ValueError as err:
        raise ValueError(f"checkpoint {path} does not match its own config: {err}") from err
    return Checkpoint(model=model, step=header.get("step"), optimizer_arrays=optimizer,
                      trainer_meta=header.get("trainer") or {}, tokenizer=header.get("tokenizer"),
                      metadata=header, path=os.fspath(path))


def _parse_header(metadata, path):
    if not metadata or METADATA_KEY not in metadata:
        keys = sorted(metadata or {})
        raise ValueError(f"{path} is a safetensors file but not an explorer checkpoint: its "
                         f"metadata has no {METADATA_KEY!r} entry (it has {keys}). A Hugging Face "
                         f"model folder loads with explorer.load_hf(folder).")
    try:
        header = json.loads(metadata[METADATA_KEY])
    except json.JSONDecodeError as err:
        raise ValueError(f"checkpoint {path} is corrupt: its {METADATA_KEY!r} metadata is not "
                         f"valid JSON ({err})") from err
    if not isinstance(header, dict):
        raise ValueError(f"checkpoint {path} is corrupt: its {METADATA_KEY!r} metadata should be "
                         f"a JSON object, got {type(header).__name__}")
    if header.get("format") != FORMAT_NAME:
        raise ValueError(f"{path} has format {header.get('format')!r}, expected {FORMAT_NAME!r}")
    version = header.get("version")
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise ValueError(f"{path} is checkpoint format version {version!r}; this explorer reads "
                         f"versions 1..{FORMAT_VERSION} (was it written by a newer explorer?)")
    if not isinstance(header.get("config"), dict):
        raise ValueError(f"checkpoint {path} has no model config (expected a 'config' object in "
                         f"its metadata)")
    return header


def load_params(model, named_arrays):
    """Copy arrays into model.params by name, in place (model.flat_params stays the one
    buffer the optimizer sees). Every param must be given, with exactly its shape; nothing
    is copied unless all of them check out."""
    expected = dict(model.param_shapes)
    missing = [name for name in expected if name not in named_arrays]
    unexpected = [name for name in named_arrays if name not in expected]
    if missing or unexpected:
        raise ValueError(f"parameter names do not match the model ({model.config}): "
                         f"missing {_preview(missing)}, unexpected {_preview(unexpected)}")
    arrays = {}
    for name, shape in model.param_shapes:
        array = np.asarray(named_arrays[name])
        if array.shape != shape:
            raise ValueError(f"parameter {name!r} has shape {array.shape}, expected {shape} "
                             f"for {model.config}")
        if not np.issubdtype(array.dtype, np.floating):
            raise ValueError(f"parameter {name!r} has dtype {array.dtype}, expected a float "
                             f"dtype (float32)")
        arrays[name] = array
    with compute_lock:
        for name, array in arrays.items():
            model.params[name][...] = array
    return model


def _preview(names, limit=5):
    if not names:
        return "none"
    shown = ", ".join(repr(n) for n in names[:limit])
    return f"[{shown}{', ...' if len(names) > limit else ''}] ({len(names)})"


# --------------------------------------------------------------------------- safetensors
# The format: 8 bytes (little-endian u64) N, then N bytes of JSON, then the tensor data.
# The JSON maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]}
# (offsets counted from the end of the JSON) and may hold "__metadata__": {str: str}.
# We read the header ourselves first only to turn a bad file into a clear message.

def read_safetensors(path):
    """(arrays: dict name -> np.ndarray, metadata: dict or None) of a safetensors file."""
    path = os.fspath(path)
    remove_stale_temps(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    if os.path.isdir(path):
        raise ValueError(f"{path} is a folder, expected a .safetensors file")
    header = _read_header(path)
    for name, info in header.items():
        if name != "__metadata__" and info.get("dtype") == "BF16":
            raise ValueError(f"{path}: tensor {name!r} is bfloat16, which NumPy cannot hold; "
                             f"convert the file to float32 first")
    try:
        arrays = safetensors.numpy.load_file(path)
    except Exception as err:  # safetensors' own error types vary between versions
        raise ValueError(f"could not read the tensors of {path}: {err}") from err
    return arrays, header.get("__metadata__")


def _read_header(path):
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise ValueError(f"{path} is not a safetensors file: it is only {size} bytes long")
        n = int.from_bytes(prefix, "little")
        if n > size - 8:
            raise ValueError(f"{path} is not a safetensors file, or is truncated: its first 8 "
                             f"bytes announce a {n}-byte header but the file has {size} bytes")
        raw = f.read(n)
    try:
        header = json.loads(raw)
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        end = max((info["data_offsets"][1] for name, info in header.items()
                   if name != "__metadata__"), default=0)
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, IndexError) as err:
        raise ValueError(f"{path} is not a safetensors file: its header is not the expected "
                         f"JSON ({err})") from err
    if size < 8 + n + end:
        raise ValueError(f"{path} is truncated: its header describes {8 + n + end} bytes but the "
                         f"file has {size} (was a save interrupted or a download cut short?)")
    return header
