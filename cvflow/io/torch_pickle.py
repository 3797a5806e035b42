"""The restricted unpickler behind :mod:`cvflow.io.checkpoint`.

A pickle names the callables it wants run; here every name is looked up in a short
allow-list of harmless stand-ins (tensor rebuilders, storage types, OrderedDict, set,
numpy scalars) and anything else raises :class:`UnsafePickleError` before anything is
called. Tensors come out as lazy references to storages; :class:`Materializer` turns
them into NumPy arrays once the storage bytes are at hand, checking every offset,
size and stride against the bytes the file actually holds.
"""
from __future__ import annotations

import math
import os
import pickle
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from cvflow.errors import UnsafePickleError

__all__ = ["RestrictedUnpickler", "Materializer", "STORAGE_DTYPES"]

# torch storage class -> element dtype as stored (bfloat16 is read as raw uint16).
STORAGE_DTYPES = {
    "FloatStorage": "f4", "DoubleStorage": "f8", "HalfStorage": "f2", "BFloat16Storage": "u2",
    "LongStorage": "i8", "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "?",
}
_NUMPY_SCALAR_CODES = {"f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "b1"}


# --- stand-ins the restricted unpickler hands out instead of real globals ---------------

@dataclass(frozen=True, slots=True)
class _StorageType:
    name: str  # e.g. "FloatStorage"


@dataclass(frozen=True, slots=True)
class _StorageRef:
    """A storage named by a persistent id; its bytes are fetched only when needed."""
    key: str
    stype: _StorageType
    numel: int
    view_offset: int = 0
    view_size: int | None = None  # legacy storage views: a slice of the root storage


@dataclass(frozen=True, slots=True)
class _LazyTensor:
    storage: _StorageRef
    offset: int
    size: tuple
    stride: tuple


@dataclass(frozen=True, slots=True)
class _TypeMarker:
    """torch.Tensor / torch.nn.Parameter: only ever compared, never called."""
    name: str


_TENSOR_TYPES = (_TypeMarker("torch.Tensor"), _TypeMarker("torch.nn.parameter.Parameter"))


def _rebuild_tensor(storage, storage_offset, size, stride):
    if not isinstance(storage, _StorageRef):
        raise ValueError(f"tensor storage is a {type(storage).__name__}, not a storage reference")
    return _LazyTensor(storage, storage_offset, tuple(size), tuple(stride))


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    return data


def _rebuild_from_type(func, new_type, args, state=None):
    # Tensor subclasses pickle as (rebuilder, type, args); only plain tensors and
    # Parameters are accepted, and only our own rebuilders are ever called.
    if func not in _REBUILDERS or new_type not in _TENSOR_TYPES:
        raise ValueError("tensor subclass rebuild with an unsupported function or type")
    return func(*args)


def _torch_size(dims=()):
    return tuple(int(d) for d in dims)


def _codecs_encode(text, encoding="utf-8"):
    # Protocol-2 pickles from Python 3 store bytes as _codecs.encode(str, "latin1").
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise ValueError("_codecs.encode is only accepted for latin-1 byte strings")
    return text.encode("latin1")


def _numpy_dtype(code, align=False, copy=True):
    if code not in _NUMPY_SCALAR_CODES:
        raise ValueError(f"numpy dtype {code!r} is not a plain numeric type")
    return np.dtype(code, copy=True)  # a private copy: BUILD may set its state


def _numpy_scalar(dtype, data=b""):
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biuf":
        raise ValueError("numpy scalar with a non-numeric dtype")
    data = data.encode("latin1") if isinstance(data, str) else data
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise ValueError("numpy scalar with malformed data")
    return np.frombuffer(data, dtype)[0].item()


_REBUILDERS = (_rebuild_tensor, _rebuild_tensor_v2, _rebuild_parameter)

_ALLOWED = {
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("_codecs", "encode"): _codecs_encode,
    ("torch", "Size"): _torch_size,
    ("torch", "Tensor"): _TENSOR_TYPES[0],
    ("torch.nn.parameter", "Parameter"): _TENSOR_TYPES[1],
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type"): _rebuild_from_type,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type,
    ("numpy", "dtype"): _numpy_dtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
}
_PY2_MODULES = {"__builtin__": "builtins"}


class RestrictedUnpickler(pickle._Unpickler):
    """Unpickler whose globals come only from ``_ALLOWED``; storages become _StorageRefs.

    Built on the pure-Python unpickler: its memo is a dict, so a corrupt memo index
    cannot make it allocate a huge table as the C one would.
    """

    def __init__(self, file, path, on_storage=None):
        # latin1: Python 2 byte strings (old checkpoints) decode losslessly.
        super().__init__(_Clamped(file), encoding="latin1")
        self._path = path
        self._on_storage = on_storage

    def _load_build(self):
        # BUILD sets an object's state. Only state dicts (OrderedDict with `_metadata`)
        # and numpy dtypes need it; anything else could be allow-listed functions or
        # stand-ins, whose attributes must not be rewritten by a file.
        inst = self.stack[-2] if len(self.stack) >= 2 else None
        if not isinstance(inst, (OrderedDict, np.dtype)):
            raise pickle.UnpicklingError(f"BUILD on a {type(inst).__name__} is not allowed")
        pickle._Unpickler.load_build(self)

    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.BUILD[0]] = _load_build

    def find_class(self, module, name):
        found = _ALLOWED.get((_PY2_MODULES.get(module, module), name))
        if found is None:
            raise UnsafePickleError(
                f"{self._path}: refusing to load global '{module}.{name}'; a weights file may only "
                "hold tensors, dicts, lists and numbers, and cvflow never runs code from one")
        return found

    def persistent_load(self, pid):
        if self._on_storage is None:
            raise pickle.UnpicklingError("unexpected persistent id in a header record")
        ref = _parse_storage_id(pid)
        self._on_storage(ref)
        return ref


class _Clamped:
    """Read-only file view whose reads never ask for more than the file has left,
    so a corrupt length field cannot trigger a huge allocation."""

    def __init__(self, f):
        self._f = f
        pos = f.tell()
        self._end = f.seek(0, os.SEEK_END)
        f.seek(pos)

    def _left(self) -> int:
        return max(self._end - self._f.tell(), 0)

    def read(self, n=-1):
        return self._f.read(self._left() if n is None or n < 0 else min(n, self._left()))

    def readinto(self, buf):
        with memoryview(buf) as view:
            return self._f.readinto(view[: self._left()])

    def readline(self):
        return self._f.readline()


def _parse_storage_id(pid) -> _StorageRef:
    if not isinstance(pid, tuple) or len(pid) not in (5, 6) or pid[0] != "storage":
        raise ValueError(f"unsupported persistent id {pid!r:.80}")
    _, stype, key, _location, numel, *view = pid
    if not isinstance(stype, _StorageType) or not isinstance(key, str) or not _is_count(numel):
        raise ValueError(f"malformed storage id {pid!r:.80}")
    if view and view[0] is not None:
        view_key, offset, size = view[0]
        if not (_is_count(offset) and _is_count(size)) or offset + size > numel:
            raise ValueError(f"storage view {view_key!r} outside storage {key!r}")
        return _StorageRef(key, stype, numel, offset, size)
    return _StorageRef(key, stype, numel)


def _is_count(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


# --- turning lazy tensors into arrays -------------------------------------------------

class Materializer:
    """Replaces _LazyTensors in an unpickled tree by ndarrays, fetching storages once."""

    def __init__(self, fetch, byteorder, budget):
        self._fetch = fetch  # (key, nbytes) -> bytearray with the storage's bytes
        self._order = "<" if byteorder == "little" else ">"
        self._budget = budget  # bytes that views may still copy; bounded by the file size
        self._storages = {}

    def storage(self, ref: _StorageRef) -> np.ndarray:
        cache_key = (ref.key, ref.stype)
        if cache_key not in self._storages:
            dtype = np.dtype(self._order + STORAGE_DTYPES[ref.stype.name])
            flat = np.frombuffer(self._fetch(ref.key, ref.numel * dtype.itemsize), dtype, ref.numel)
            if not dtype.isnative:
                flat = flat.astype(dtype.newbyteorder("="))
            if ref.stype.name == "BFloat16Storage":  # bfloat16 = upper half of a float32
                flat = (flat.astype(np.uint32) << 16).view(np.float32)
            self._storages[cache_key] = flat
        flat = self._storages[cache_key]
        if ref.view_size is not None:
            flat = flat[ref.view_offset:ref.view_offset + ref.view_size]
        return flat

    def tensor(self, t: _LazyTensor, where: str) -> np.ndarray:
        size, stride, offset = t.size, t.stride, t.offset
        if not (all(map(_is_count, size + stride)) and _is_count(offset) and len(size) == len(stride)):
            raise ValueError(f"{where}: malformed tensor (offset {offset!r}, size {size}, stride {stride})")
        flat = self.storage(t.storage)
        count = math.prod(size)
        if count == 0:
            return np.zeros(size, flat.dtype)
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= flat.size or count > flat.size:
            raise ValueError(f"{where}: tensor (offset {offset}, size {size}, stride {stride}) does not "
                             f"fit its storage of {flat.size} elements")
        if offset == 0 and count == flat.size and stride == _contiguous_strides(size):
            return flat.reshape(size)  # the whole storage: share it, no copy
        view = np.lib.stride_tricks.as_strided(
            flat[offset:], size, [s * flat.itemsize for s in stride], writeable=False)
        return self._copy(view, where)

    def _copy(self, view: np.ndarray, where: str) -> np.ndarray:
        self._budget -= view.nbytes
        if self._budget < 0:
            raise ValueError(f"{where}: tensor views expand to more data than the file holds")
        return np.array(view, order="C")

    def walk(self, obj, where="checkpoint", memo=None):
        memo = {} if memo is None else memo
        if id(obj) in memo:
            return memo[id(obj)]
        if isinstance(obj, _LazyTensor):
            out = self.tensor(obj, where)
        elif isinstance(obj, _StorageRef):
            out = self._copy(self.storage(obj), where)
        elif isinstance(obj, dict):
            out = type(obj)() if type(obj) is OrderedDict else {}
            for k, v in obj.items():
                out[k] = self.walk(v, f"{where}.{k}" if where else str(k), memo)
        elif isinstance(obj, (list, tuple)):
            out = type(obj)(self.walk(v, f"{where}[{i}]", memo) for i, v in enumerate(obj))
        else:
            return obj
        memo[id(obj)] = out
        return out


def _contiguous_strides(size) -> tuple:
    strides, acc = [], 1
    for n in reversed(size):
        strides.append(acc)
        acc *= n
    return tuple(reversed(strides))

