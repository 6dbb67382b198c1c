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
              step, the trainer's own metadata, the tokenizer (or null) and, from version 2,
              "checksums": {"algorithm": "sha256", "tensors": {name: hex digest}}

The checksums: the sha256 of every tensor's bytes as the file stores them (little-endian,
C order), one per tensor, optimizer arrays included. load() recomputes them and refuses a
file where one differs, naming the tensor: a flipped bit on a disk or in a download is an
error instead of one silently wrong weight. (They catch accidents and edits by tools that
do not know about them; they cannot stop someone who rewrites the checksums too. Only a
digest kept outside the file can.) Version-1 files, written before checksums, still load,
with one NoChecksumWarning. Every loader (load, load_hf, load_llmc) also refuses NaN and
infinite values, and checks the tensors' names and shapes in the file's header against the
config before it allocates the model, so a header that claims a huge model fails fast.

Every write goes to a temporary file in the same folder first, is flushed to disk, and
only then renamed over the target: a crash mid-save leaves the old file, never half a file.
"""
from __future__ import annotations

import hashlib
import json
import os
import uuid
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import safetensors.numpy

from ..model.config import BLOCK_PARAMS, GPTConfig, param_shapes
from ..model.gpt import GPT
from .safetensors_format import (
    DTYPE_NAMES,
    read_safetensors,  # noqa: F401  (its home until format 2)
    read_safetensors_header,
    read_tensors,
)

FORMAT_NAME = "transformer-explorer-checkpoint"
FORMAT_VERSION = 2                 # 2 added "checksums"; version 1 files still load
CHECKSUM_ALGORITHM = "sha256"
METADATA_KEY = "explorer"          # the one safetensors metadata entry we use
OPTIMIZER_PREFIX = "optimizer."    # tensor-name prefix of the trainer's arrays

#: A file or folder name, as open() takes it.
StrPath = str | os.PathLike


class TrainerLike(Protocol):
    """A trainer as save() and Checkpoint.restore() see it (explorer.train.Trainer is one;
    io imports nothing from the train floor)."""
    model: GPT

    def checkpoint_state(self) -> tuple[dict[str, np.ndarray], dict]:
        """(optimizer arrays, JSON-able metadata) that, with the model, restore it."""

    def check_state(self, arrays: dict[str, np.ndarray], meta: dict, source: str) -> Any:
        """Validate saved state, writing nothing; returns what put_state() writes."""

    def put_state(self, state: Any) -> None:
        """Write a state that check_state() returned."""


class NoChecksumWarning(UserWarning):
    """Weights were loaded from a file with no checksum of ours to verify them against
    (a version-1 checkpoint, a Hugging Face folder, an llm.c file). Silence it with
    warnings.simplefilter("ignore", NoChecksumWarning)."""


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

    def restore(self, trainer: TrainerLike) -> None:
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
        with trainer.model.lock:
            state = trainer.check_state(self.optimizer_arrays, self.trainer_meta, source)
            load_params(trainer.model, params)
            trainer.put_state(state)


# --------------------------------------------------------------------------- saving
def save(obj: GPT | TrainerLike, path: StrPath, *, tokenizer: Any = None) -> str:
    """Write a GPT, or a trainer (anything with .model and .checkpoint_state()), to `path`.

    tokenizer: an object with to_dict(), or such a dict; if None, a trainer's
    trainer.data.tokenizer is used when it has one. Returns the path written."""
    path = os.fspath(path)
    with _model_of(obj).lock:  # no training step may run between copying params and optimizer state
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
        "checksums": {"algorithm": CHECKSUM_ALGORITHM, "tensors": tensor_checksums(tensors)},
    }
    metadata = {METADATA_KEY: _to_json(header)}
    atomic_write(path, lambda tmp: safetensors.numpy.save_file(tensors, tmp, metadata=metadata))
    return path


def _model_of(obj):
    """The GPT of a GPT or of a trainer (anything with .model and .checkpoint_state())."""
    if isinstance(obj, GPT):
        return obj
    if hasattr(obj, "model") and hasattr(obj, "checkpoint_state"):
        if not isinstance(obj.model, GPT):
            raise TypeError(f"trainer.model must be a GPT, got {type(obj.model).__name__}")
        return obj.model
    raise TypeError(f"save() expects a GPT or a trainer (an object with .model and "
                    f".checkpoint_state()), got {type(obj).__name__}")


def _unpack(obj):
    """(model, optimizer arrays, trainer metadata) of a GPT or a trainer."""
    model = _model_of(obj)
    if obj is model:
        return model, {}, None
    arrays, meta = obj.checkpoint_state()
    arrays = {name: np.array(a) for name, a in arrays.items()}  # copies: training goes on
    if not isinstance(meta, dict):
        raise TypeError(f"checkpoint_state() must return (arrays, dict), got metadata of "
                        f"type {type(meta).__name__}")
    return model, arrays, meta


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
def load(path: StrPath) -> Checkpoint:
    """Read a checkpoint written by save(). Raises FileNotFoundError or ValueError saying
    what is wrong with the file (truncated, not ours, wrong version, missing tensor, a
    tensor that fails its checksum, NaN or infinite values, ...).

    Everything that can be checked from the file's header (names, shapes, dtypes, sizes)
    is checked before any tensor is read or the model is built."""
    path = os.fspath(path)
    remove_stale_temps(path)
    layout = read_safetensors_header(path)
    header = _parse_header(layout.get("__metadata__"), path)
    try:
        config = GPTConfig.from_dict(header["config"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"checkpoint {path} has an invalid model config "
                         f"{header['config']!r}: {err}") from err
    tensors = {name: info for name, info in layout.items() if name != "__metadata__"}
    params = {k: v for k, v in tensors.items() if not k.startswith(OPTIMIZER_PREFIX)}
    try:
        check_shapes({name: tuple(info["shape"]) for name, info in params.items()}, config)
    except ValueError as err:
        raise ValueError(f"checkpoint {path} does not match its own config: {err}") from err
    for name, info in params.items():
        if info["dtype"] != "F32":
            raise ValueError(f"checkpoint {path}: tensor {name!r} is "
                             f"{DTYPE_NAMES.get(info['dtype'], info['dtype'])}, expected float32")
    checksums = _checksums_of(header, tensors, path)   # before reading: a malformed entry
    arrays = read_tensors(path, layout)                  # fails without reading 1 GB first
    if checksums is None:
        warnings.warn(f"{path} is a version-1 checkpoint, written before explorer stored "
                      f"checksums: its {len(arrays)} tensors were loaded without verifying "
                      f"them. Saving it again writes a version-{FORMAT_VERSION} file with "
                      f"checksums.", NoChecksumWarning, stacklevel=2)
    else:
        verify_checksums(arrays, checksums, path)
    for name, array in arrays.items():   # the optimizer's m and v too: NaN there is NaN soon
        check_finite(array, name, path)
    model = GPT(config)
    load_params(model, {k: arrays[k] for k in params})
    optimizer = {k[len(OPTIMIZER_PREFIX):]: v for k, v in arrays.items()
                 if k.startswith(OPTIMIZER_PREFIX)}
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


def load_params(model: GPT, named_arrays: Mapping[str, np.ndarray]) -> GPT:
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
    with model.lock:
        for name, array in arrays.items():
            model.params[name][...] = array
    return model


def _preview(names, limit=5):
    if not names:
        return "none"
    shown = ", ".join(repr(n) for n in names[:limit])
    return f"[{shown}{', ...' if len(names) > limit else ''}] ({len(names)})"


# --------------------------------------------------------------------------- integrity
def check_shapes(shapes, config):
    """Check {param name: shape} against the params a GPT of `config` has, before anything
    the size of that model is allocated: the file's header says what it holds, so a header
    (or config) claiming a model the file does not contain fails here, in microseconds."""
    count = 4 + len(BLOCK_PARAMS) * config.n_layer   # wte, wpe, ln_f's two, 12 per block
    if count > 2 * len(shapes) + 100:   # neither build nor list a million missing names
        raise ValueError(f"the model ({config}) has {count} parameter tensors, but only "
                         f"{len(shapes)} were found")
    expected = param_shapes(config)
    names = {name for name, _ in expected}
    missing = [name for name, _ in expected if name not in shapes]
    unexpected = [name for name in shapes if name not in names]
    if missing or unexpected:
        raise ValueError(f"parameter names do not match the model ({config}): "
                         f"missing {_preview(missing)}, unexpected {_preview(unexpected)}")
    for name, shape in expected:
        if tuple(shapes[name]) != shape:
            raise ValueError(f"parameter {name!r} has shape {tuple(shapes[name])}, expected "
                             f"{shape} for {config}")


def tensor_checksums(arrays):
    """{name: sha256 hex digest of the array's bytes, little-endian, C order}: the bytes a
    safetensors file stores for it. About 0.6 s per GiB (GPT-2 124M with AdamW's m and v is
    1.4 GiB). On one thread: a pool halves that only on idle cores, and a save usually runs
    beside training, which needs them."""
    return {name: _sha256(array) for name, array in arrays.items()}


def _sha256(array):
    array = np.ascontiguousarray(array)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return hashlib.sha256(array.reshape(-1).view(np.uint8)).hexdigest()


def _checksums_of(header, tensors, path):
    """{tensor name: expected digest} of a version-2+ header; None for version 1."""
    if header["version"] < 2:
        return None
    entry = header.get("checksums")
    expected_form = (f"a version-{header['version']} checkpoint has a 'checksums' entry "
                     f"{{'algorithm': '{CHECKSUM_ALGORITHM}', 'tensors': {{name: hex digest}}}}")
    if not isinstance(entry, dict) or not isinstance(entry.get("tensors"), dict):
        raise ValueError(f"checkpoint {path} is corrupt: {expected_form}, but this one has "
                         f"{entry!r:.120}")
    if entry.get("algorithm") != CHECKSUM_ALGORITHM:
        raise ValueError(f"checkpoint {path} uses checksum algorithm {entry.get('algorithm')!r}; "
                         f"this explorer verifies {CHECKSUM_ALGORITHM!r}")
    checksums = entry["tensors"]
    unchecked = [name for name in tensors if name not in checksums]
    absent = [name for name in checksums if name not in tensors]
    if unchecked or absent:
        raise ValueError(f"checkpoint {path} is corrupt: its checksums do not list the tensors "
                         f"it holds (tensors without a checksum: {_preview(unchecked)}; "
                         f"checksums of tensors it does not hold: {_preview(absent)})")
    return checksums


def verify_checksums(arrays, checksums, path):
    """Raise ValueError naming every tensor whose bytes do not hash to its checksum."""
    actual = tensor_checksums(arrays)
    wrong = [name for name in arrays if actual[name] != checksums[name]]
    if wrong:
        name = wrong[0]
        raise ValueError(f"checkpoint {path} is corrupt: tensor {name!r} does not match its "
                         f"{CHECKSUM_ALGORITHM} checksum (the file says {checksums[name]:.16}..., "
                         f"its bytes hash to {actual[name]:.16}...); tensors that fail: "
                         f"{_preview(wrong)}. Its bytes changed after it was saved (a disk or "
                         f"download error, or an edit): use another copy of the file.")


def check_finite(array, name, source):
    """Raise ValueError if a float array holds NaN or an infinity, saying how many and where
    the first one is. Integer arrays are always finite."""
    if not np.issubdtype(array.dtype, np.floating) or np.isfinite(array).all():
        return
    bad = ~np.isfinite(array)
    first = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), array.shape))
    nans = int(np.isnan(array).sum())
    raise ValueError(f"{source}: tensor {name!r} holds {int(bad.sum())} non-finite values "
                     f"({nans} NaN, {int(bad.sum()) - nans} infinite) out of {array.size}, the "
                     f"first at index {first} (value {array[first]}); weights and optimizer "
                     f"state must be finite (was it saved from a run that diverged?)")
