"""Reading safetensors files: the header first, checked against the file's size, then
the arrays. Nothing about the model here; checkpoint.py and hf.py read through this.

The format: 8 bytes (little-endian u64) N, then N bytes of JSON, then the tensor data.
The JSON maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]}
(offsets counted from the end of the JSON) and may hold "__metadata__": {str: str}.
We read the header ourselves first only to turn a bad file into a clear message.
"""
import json
import math
import os

import safetensors.numpy

# safetensors dtype codes -> (NumPy's name, bytes per value)
_DTYPES = {"F64": ("float64", 8), "F32": ("float32", 4), "F16": ("float16", 2),
           "BF16": ("bfloat16", 2), "I64": ("int64", 8), "I32": ("int32", 4),
           "I16": ("int16", 2), "I8": ("int8", 1), "U64": ("uint64", 8), "U32": ("uint32", 4),
           "U16": ("uint16", 2), "U8": ("uint8", 1), "BOOL": ("bool", 1)}
DTYPE_NAMES = {code: name for code, (name, _) in _DTYPES.items()}


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
