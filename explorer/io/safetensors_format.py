"""Reading safetensors files: the header first, checked against the file's size, then
the arrays. Nothing about the model here; checkpoint.py and hf.py read through this.

The format: 8 bytes (little-endian u64) N, then N bytes of JSON, then the tensor data.
The JSON maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]}
(offsets counted from the end of the JSON) and may hold "__metadata__": {str: str}.
We read the header ourselves first only to turn a bad file into a clear message.

read_float_tensor_into reads one tensor straight into an array the caller owns (a view into
a model's flat parameter buffer), so loading a model needs no second copy of its weights.
"""
import json
import math
import os
import sys

import numpy as np
import safetensors.numpy

# safetensors dtype codes -> (NumPy's name, bytes per value)
_DTYPES = {"F64": ("float64", 8), "F32": ("float32", 4), "F16": ("float16", 2),
           "BF16": ("bfloat16", 2), "I64": ("int64", 8), "I32": ("int32", 4),
           "I16": ("int16", 2), "I8": ("int8", 1), "U64": ("uint64", 8), "U32": ("uint32", 4),
           "U16": ("uint16", 2), "U8": ("uint8", 1), "BOOL": ("bool", 1)}
DTYPE_NAMES = {code: name for code, (name, _) in _DTYPES.items()}
# the float codes read_float_tensor_into converts to float32; bfloat16 is read as its bits
FLOAT_DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "F64": np.dtype("<f8"),
                "BF16": np.dtype("<u2")}
BLOCK_BYTES = 16 * 2**20   # what a converted or transposed read holds besides its target


def read_safetensors(path):
    """(arrays: dict name -> np.ndarray, metadata: dict or None) of a safetensors file."""
    path = _safetensors_path(path)
    header = _read_header(path)
    return read_tensors(path, header), header.get("__metadata__")


def read_safetensors_header(path):
    """The header of a safetensors file, without reading its tensors: {name: {"dtype",
    "shape", "data_offsets"}, "__metadata__": {...}}, checked against the file's size."""
    return _read_header(_safetensors_path(path))


def _safetensors_path(path):
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    if os.path.isdir(path):
        raise ValueError(f"{path} is a folder, expected a .safetensors file")
    return path


def read_tensors(path, header):
    """{name: array} of a safetensors file whose header read_safetensors_header gave."""
    for name, info in header.items():
        if name != "__metadata__" and info.get("dtype") == "BF16":
            raise ValueError(f"{path}: tensor {name!r} is bfloat16, which NumPy cannot hold; "
                             f"convert the file to float32 first")
    try:
        return safetensors.numpy.load_file(path)
    except Exception as err:  # safetensors' own error types vary between versions
        raise ValueError(f"could not read the tensors of {path}: {err}") from err


def _read_header(path):
    """The JSON header of a safetensors file, checked against the file's size (nothing but
    the header is read): {name: {"dtype", "shape", "data_offsets"}, "__metadata__": ...}."""
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
        tensors = {name: info for name, info in header.items() if name != "__metadata__"}
        for name, info in tensors.items():
            _check_tensor_entry(name, info)
        end = max((info["data_offsets"][1] for info in tensors.values()), default=0)
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, IndexError) as err:
        raise ValueError(f"{path} is not a safetensors file: its header is not the expected "
                         f"JSON ({err})") from err
    if size < 8 + n + end:
        raise ValueError(f"{path} is truncated: its header describes {8 + n + end} bytes but the "
                         f"file has {size} (was a save interrupted or a download cut short?)")
    return header


def _check_tensor_entry(name, info):
    """One tensor's entry: a shape of non-negative ints whose byte size is its data span."""
    shape, (begin, end) = info["shape"], info["data_offsets"]
    if (not isinstance(shape, list)
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in (begin, end))
            or not 0 <= begin <= end):
        raise ValueError(f"tensor {name!r} has shape {shape!r} and data_offsets "
                         f"{info['data_offsets']!r}, expected a list of sizes and [begin, end]")
    if info["dtype"] in _DTYPES:
        dtype, itemsize = _DTYPES[info["dtype"]]
        nbytes = itemsize * math.prod(shape)
        if nbytes != end - begin:
            raise ValueError(f"tensor {name!r} is {dtype} of shape {tuple(shape)}, "
                             f"{nbytes} bytes, but its data_offsets span {end - begin}")


# --------------------------------------------------------------------------- into buffers
def data_start(f):
    """Where the tensor data begins in an open safetensors file: after the 8-byte length
    and the JSON header (data_offsets count from here)."""
    f.seek(0)
    return 8 + int.from_bytes(f.read(8), "little")


def read_float_tensor_into(f, path, name, info, out):
    """Read tensor `name` (`info`: its header entry) of the open file `f` into `out`, a float32
    array of the tensor's shape (a view is fine, e.g. a transposed one). F16, BF16 and F64
    are converted. A float32 tensor lands in a contiguous `out` with one read and no copy;
    otherwise it goes through blocks of whole rows, at most BLOCK_BYTES each."""
    shape = tuple(info["shape"])
    if out.shape != shape or out.dtype != np.float32:
        raise ValueError(f"{path}: tensor {name!r} is {shape}, but it is being read into a "
                         f"{out.dtype} array of shape {out.shape}")
    dtype = float_dtype(path, name, info)
    start = data_start(f) + info["data_offsets"][0]
    if dtype == np.float32 and out.flags.c_contiguous:
        f.seek(start)
        _read_exactly_into(f, memoryview(out.reshape(-1)).cast("B"), path, name)
        if sys.byteorder == "big":   # the file is little-endian
            out.byteswap(inplace=True)
        return out
    rows = out if shape else out.reshape(1)   # a 0-d tensor is one row (and contiguous)
    for first, block in float_tensor_blocks(f, path, name, info):
        rows[first:first + len(block)] = block
    return out


def float_tensor_blocks(f, path, name, info, block_bytes=BLOCK_BYTES):
    """(first row, float32 array of whole rows along axis 0) for a float tensor, in order."""
    dtype = float_dtype(path, name, info)
    shape = tuple(info["shape"]) or (1,)
    rows, row_shape = shape[0], shape[1:]
    row_bytes = dtype.itemsize * math.prod(row_shape)
    step = max(1, block_bytes // max(row_bytes, 1))
    f.seek(data_start(f) + info["data_offsets"][0])
    for first in range(0, rows, step):
        count = min(step, rows - first)
        raw = bytearray(count * row_bytes)
        _read_exactly_into(f, memoryview(raw), path, name)
        block = np.frombuffer(raw, dtype).reshape((count,) + row_shape)
        if info["dtype"] == "BF16":   # bfloat16 is the top half of a float32's bits
            block = (block.astype("<u4") << 16).view("<f4")
        yield first, block.astype(np.float32, copy=False)


def float_dtype(path, name, info):
    if info.get("dtype") not in FLOAT_DTYPES:
        raise ValueError(f"{path}: tensor {name!r} is {DTYPE_NAMES.get(info.get('dtype'), info.get('dtype'))}, "
                         f"expected floats ({', '.join(FLOAT_DTYPES)})")
    return FLOAT_DTYPES[info["dtype"]]


def _read_exactly_into(f, view, path, name):
    done = 0
    while done < len(view):
        got = f.readinto(view[done:])
        if not got:
            raise ValueError(f"{path} ended inside tensor {name!r} (was a download cut short?)")
        done += got
