"""Read PyTorch checkpoints without PyTorch, and cvflow's converted ``.npz`` weights.

Two ``torch.save`` layouts are understood:

* zip (torch >= 1.6): ``<dir>/data.pkl`` holds the object pickle, ``<dir>/data/<key>``
  the raw bytes of each storage, ``<dir>/byteorder`` "little" or "big" (absent = little).
* legacy: five back-to-back records in one file -- pickled magic number, pickled
  protocol version (1001), pickled sys_info dict, the object pickle, a pickled list of
  storage keys, then per storage an 8-byte element count and the raw elements.

In both, the object pickle names storages through persistent ids
``('storage', <torch.XStorage>, key, location, numel[, view])`` and builds tensors with
``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)``.

Pickles are read with :class:`cvflow.io.torch_pickle.RestrictedUnpickler`, which
runs nothing outside a short allow-list (anything else: UnsafePickleError). Every size
is checked against the bytes the file holds, so a corrupt or hostile file cannot make
the reader allocate more than that.
"""
from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Mapping

import numpy as np

from cvflow.arrays import to_numpy
from cvflow.errors import CvflowError, CvflowFileNotFoundError, CvflowTypeError, WeightsError, os_error
from cvflow.io.atomic import write_atomic
from cvflow.io.npz import write_npz
from cvflow.io.torch_pickle import STORAGE_DTYPES, Materializer, RestrictedUnpickler

__all__ = ["load_weights", "load_checkpoint", "read_torch_checkpoint", "normalize_state_dict",
           "save_converted"]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")


# --- file formats ---------------------------------------------------------------------

def _read_zip(path: str, zf: zipfile.ZipFile, pkl_name: str, file_size: int):
    prefix = pkl_name[: -len("data.pkl")]
    names = set(zf.namelist())
    byteorder = "little"
    if prefix + "byteorder" in names:
        byteorder = zf.read(prefix + "byteorder").decode("ascii", "replace").strip()
        if byteorder not in ("little", "big"):
            raise ValueError(f"unknown byte order {byteorder!r}")
    pkl = _stored_member(zf, pkl_name, file_size)
    with zf.open(pkl) as fh:
        obj = RestrictedUnpickler(io.BytesIO(fh.read()), path, on_storage=lambda ref: None).load()

    def fetch(key, nbytes):
        member = f"{prefix}data/{key}"
        if member not in names:
            raise ValueError(f"storage {key!r} is missing from the archive ({member})")
        info = _stored_member(zf, member, file_size)
        if info.file_size < nbytes:
            raise ValueError(f"storage {key!r} holds {info.file_size} bytes, its tensors need {nbytes}")
        with zf.open(info) as fh:
            return _read_exact(fh, nbytes, f"storage {key!r}")

    return Materializer(fetch, byteorder, file_size).walk(obj)


def _stored_member(zf: zipfile.ZipFile, name: str, file_size: int) -> zipfile.ZipInfo:
    """ZipInfo of an uncompressed member no larger than the archive itself."""
    info = zf.getinfo(name)
    if info.compress_type != zipfile.ZIP_STORED:  # torch never compresses; refuse zip bombs
        raise ValueError(f"{name} is compressed; torch writes checkpoint members uncompressed")
    if info.file_size > file_size:
        raise ValueError(f"{name} claims {info.file_size} bytes, more than the whole file")
    return info


def _read_legacy(path: str, f, file_size: int):
    header = RestrictedUnpickler(f, path)
    if header.load() != _LEGACY_MAGIC:
        raise ValueError("not a PyTorch checkpoint (bad magic number)")
    if (version := header.load()) != _LEGACY_PROTOCOL:
        raise ValueError(f"unsupported legacy protocol version {version!r}")
    sys_info = header.load()
    little = sys_info.get("little_endian", True) if isinstance(sys_info, dict) else True
    stypes = {}  # storage key -> storage type of its first reference
    obj = RestrictedUnpickler(f, path, lambda ref: stypes.setdefault(ref.key, ref)).load()
    keys = RestrictedUnpickler(f, path).load()
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ValueError("malformed storage key list")
    table, pos = {}, f.tell()
    for key in keys:  # index the storage records; their bytes are read on demand
        if key not in stypes:
            raise ValueError(f"storage {key!r} is listed but never referenced")
        f.seek(pos)
        count = _read_exact(f, 8, f"the size of storage {key!r}")
        numel = int.from_bytes(count, "little" if little else "big")
        nbytes = numel * np.dtype(STORAGE_DTYPES[stypes[key].stype.name]).itemsize
        if numel != stypes[key].numel or pos + 8 + nbytes > file_size:
            raise ValueError(f"storage {key!r} of {numel} elements ({nbytes} bytes) does not match its "
                             f"reference ({stypes[key].numel} elements) or the {file_size - pos - 8} "
                             "bytes left in the file (truncated?)")
        table[key] = (pos + 8, nbytes)
        pos += 8 + nbytes

    def fetch(key, nbytes):
        if key not in table:
            raise ValueError(f"storage {key!r} is referenced but not stored")
        start, stored = table[key]
        if nbytes > stored:
            raise ValueError(f"storage {key!r} holds {stored} bytes, its tensors need {nbytes}")
        f.seek(start)
        return _read_exact(f, nbytes, f"storage {key!r}")

    return Materializer(fetch, "little" if little else "big", file_size).walk(obj)


def _read_exact(fh, nbytes: int, what: str) -> bytearray:
    buf = bytearray(nbytes)
    with memoryview(buf) as view:
        got = 0
        while got < nbytes:
            n = fh.readinto(view[got:])
            if not n:
                raise ValueError(f"file ends inside {what} ({got} of {nbytes} bytes)")
            got += n
    return buf


def _fspath(path) -> str:
    try:
        path = os.fspath(path)
    except TypeError:
        raise CvflowTypeError(f"weights path must be str or os.PathLike, got {type(path).__name__}") from None
    if not os.path.exists(path):
        raise CvflowFileNotFoundError(f"weights file not found: {path}")
    if not os.path.isfile(path):
        raise WeightsError(f"{path}: not a regular file")
    return path


def _sniff(path: str):
    """("torch-zip", data.pkl name) | ("npz", None) | ("legacy", None) for a file's content."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head in _ZIP_MAGICS:
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except Exception as e:  # a damaged directory raises BadZipFile, NotImplementedError, ...
            raise WeightsError(f"{path}: corrupt zip archive ({type(e).__name__}: {e})") from None
        pkls = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkls) == 1:
            return "torch-zip", pkls[0]
        if names and all(n.endswith(".npy") for n in names):
            return "npz", None
        raise WeightsError(f"{path}: a zip archive that is neither a PyTorch checkpoint "
                           "(<dir>/data.pkl) nor a cvflow .npz (only .npy members)")
    if head[:1] == b"\x80":
        return "legacy", None
    raise WeightsError(f"{path}: not a PyTorch checkpoint or a cvflow .npz file "
                       f"(starts with {head!r}; pre-2018 tar checkpoints are not supported)")


def read_torch_checkpoint(path):
    """The object a ``torch.save`` file holds, with every tensor as a NumPy array.

    Raises CvflowFileNotFoundError (no file), UnsafePickleError (a global outside the
    allow-list) or WeightsError (corrupt, truncated, or not a checkpoint).
    """
    path = _fspath(path)
    kind, pkl_name = _sniff(path)
    if kind == "npz":
        raise WeightsError(f"{path}: a cvflow .npz, not a PyTorch checkpoint; use load_weights()")
    file_size = os.path.getsize(path)
    try:
        if kind == "torch-zip":
            with zipfile.ZipFile(path) as zf:
                return _read_zip(path, zf, pkl_name, file_size)
        with open(path, "rb") as f:
            return _read_legacy(path, f, file_size)
    except CvflowError:
        raise
    except Exception as e:  # any parse failure of untrusted bytes means "corrupt file"
        raise WeightsError(f"{path}: corrupt or truncated PyTorch checkpoint "
                           f"({type(e).__name__}: {e})") from None


def load_checkpoint(path) -> dict[str, np.ndarray]:
    """Flat ``{key: array}`` state dict of a PyTorch checkpoint (see normalize_state_dict)."""
    return normalize_state_dict(read_torch_checkpoint(path), where=os.fspath(path))


def normalize_state_dict(obj, where: str = "weights") -> dict[str, np.ndarray]:
    """Flat ``{key: ndarray}`` from a checkpoint object or a user mapping.

    Unwraps ``{"state_dict": ...}`` (FlowNet2 releases) and ``{"model": ...}`` (GMFlow),
    strips a leading ``module.`` (DataParallel) from every key, and drops entries that
    are not arrays (``epoch``, ``best_EPE``, ...). Array-likes (CuPy, torch) are copied
    to NumPy; dtypes are kept.
    """
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{where}: expected a state dict (a mapping of names to tensors), "
                           f"got {type(obj).__name__}")
    for container in ("state_dict", "model"):
        if isinstance(obj.get(container), Mapping):
            obj = obj[container]
            break
    out = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            raise WeightsError(f"{where}: state dict keys must be strings, got {key!r}")
        arr = _as_array(value, key, where)
        if arr is None:
            continue
        name = key.removeprefix("module.")
        if name in out:
            raise WeightsError(f"{where}: key {name!r} appears both with and without 'module.'")
        out[name] = arr
    if not out:
        raise WeightsError(f"{where}: holds no tensors (top-level keys: {sorted(map(str, obj))[:10]})")
    return out


def _as_array(value, key: str, where: str):
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, np.generic) or not hasattr(value, "shape") or not hasattr(value, "__array__"):
        return None  # numbers, strings, nested dicts (optimizer state, ...)
    try:
        return np.asarray(to_numpy(value))
    except Exception as e:  # foreign array types fail in their own ways (grad, device, ...)
        raise WeightsError(f"{where}: cannot convert {key!r} ({type(value).__name__}) "
                           f"to a NumPy array: {e}") from None


# --- cvflow's converted format ----------------------------------------------------------

def save_converted(weights: Mapping, path) -> None:
    """Write ``{key: array}`` as an uncompressed ``.npz`` (no pickle; loads fast).

    The file is written under a temporary name and renamed, so a crash leaves no
    half-written weights behind.
    """
    flat = normalize_state_dict(weights)
    path = os.fspath(path)
    for key, arr in flat.items():
        if arr.dtype.kind not in "biuf":
            raise WeightsError(f"{key!r}: only numeric arrays can be saved, got {arr.dtype}")
    # asarray, not ascontiguousarray: that turns 0-d tensors (num_batches_tracked) into (1,)
    arrays = {key: np.asarray(arr, order="C") for key, arr in flat.items()}
    try:
        write_atomic(path, lambda tmp: write_npz(tmp, arrays), f"{path}.part-{os.getpid()}")
    except OSError as e:  # missing directory, read-only file system, a directory at `path`, ...
        raise os_error("write", path, e) from None


def _load_npz(path: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except Exception as e:  # zipfile/format errors of a damaged file
        raise WeightsError(f"{path}: corrupt .npz weights ({type(e).__name__}: {e})") from None


def load_weights(path) -> dict[str, np.ndarray]:
    """Flat ``{key: array}`` from a PyTorch checkpoint (zip or legacy) or a cvflow ``.npz``.

    The format is recognised from the content, not the file name.
    """
    path = _fspath(path)
    if _sniff(path)[0] == "npz":
        return normalize_state_dict(_load_npz(path), where=path)
    return load_checkpoint(path)
