"""Read HuggingFace ``.safetensors`` weight files (e.g. SEA-RAFT's ``model.safetensors``).

The format: an 8-byte little-endian header length N, N bytes of JSON
``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}``, then
the tensors' raw little-endian bytes, offsets counted from the end of the header. No code
is involved (unlike a pickle), so reading it is only a matter of checking that every
offset, shape and dtype is consistent with the bytes the file holds.
"""
from __future__ import annotations

import json
import math
import os
import struct

import numpy as np

from cvflow.errors import WeightsError

_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
           "I8": "i1", "U8": "u1", "BOOL": "?", "BF16": "<u2"}
_MAX_HEADER = 100 << 20  # the reference implementation's own limit


def is_safetensors(path) -> bool:
    """Whether the file starts like a safetensors file: a sane header length, then '{'."""
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        return False
    n = struct.unpack("<Q", head[:8])[0]
    return 2 <= n <= min(_MAX_HEADER, os.path.getsize(path) - 8)


def read_safetensors(path) -> dict[str, np.ndarray]:
    """{name: array} of every tensor in the file (BF16 widened to float32). Raises
    WeightsError naming the file and the tensor when the header and the bytes disagree."""
    path = os.fspath(path)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise WeightsError(f"{path}: truncated safetensors file ({size} bytes)")
        n = struct.unpack("<Q", raw)[0]
        if not 2 <= n <= min(_MAX_HEADER, size - 8):
            raise WeightsError(f"{path}: safetensors header length {n} does not fit the file's {size} bytes")
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise WeightsError(f"{path}: corrupt safetensors header ({e})") from None
        if not isinstance(header, dict):
            raise WeightsError(f"{path}: safetensors header is not a JSON object")
        data = f.read()
    out = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        out[name] = _tensor(path, name, spec, data)
    return out


def _tensor(path, name, spec, data):
    try:
        dtype, shape, (begin, end) = spec["dtype"], [int(d) for d in spec["shape"]], spec["data_offsets"]
    except (KeyError, TypeError, ValueError):
        raise WeightsError(f"{path}: tensor {name!r} has a malformed header entry {spec!r}") from None
    if dtype not in _DTYPES:
        raise WeightsError(f"{path}: tensor {name!r} has dtype {dtype!r}; supported: {', '.join(_DTYPES)}")
    item = np.dtype(_DTYPES[dtype]).itemsize
    if min(shape, default=0) < 0 or not 0 <= begin <= end <= len(data) or end - begin != math.prod(shape) * item:
        raise WeightsError(f"{path}: tensor {name!r} ({dtype}, shape {tuple(shape)}) does not match its bytes "
                           f"[{begin}, {end}) of the {len(data)} after the header")
    arr = np.frombuffer(data, dtype=_DTYPES[dtype], count=math.prod(shape), offset=begin).reshape(shape)
    if dtype == "BF16":  # bfloat16 is the top half of a float32
        arr = (arr.astype(np.uint32) << 16).view(np.float32)
    return arr.astype(arr.dtype.newbyteorder("="), copy=True)
