"""An algorithm's settings through cv2.FileStorage: cv2.Algorithm's save / write / read.

What is stored: the model name, the flags, every option, and where the weights came
from (the checkpoint's path and sha256; for weights given as arrays, "" and the sha256
of the arrays) -- never the weights themselves, which stay in their release files:

    DenseOpticalFlow_cvflow_raft-small:
       model: raft-small
       flags: 0
       options: {iters: 12, warm_start: 0, corr_budget: 1073741824}
       weights: {path: /data/raft-small.pth, sha256: c7d41b9c...}
"""
from __future__ import annotations

import hashlib
import os

import numpy as np

from cvflow.arrays import to_numpy
from cvflow.errors import CvflowTypeError, InputError, os_error

__all__ = ["AlgorithmSettings", "save", "write", "read", "weights_sha256", "cached_weights_path"]

_CHUNK = 1 << 20


class AlgorithmSettings:
    """cv2.Algorithm's surface beyond DenseOpticalFlow, for `cvflow.OpticalFlow`."""

    def empty(self) -> bool:
        """True when the algorithm has no weights (never, for an object from `create`)."""
        return not self._params

    def clear(self) -> None:
        """Release the state kept between calls (as collectGarbage); options are kept."""
        self.collectGarbage()

    def save(self, filename) -> None:
        """Write the settings (model, flags, options, weights path and sha256; never the
        weights) to a .yml/.xml/.json file through cv2.FileStorage."""
        save(self, filename)

    def write(self, fs, name=None) -> None:
        """Write the settings into an open cv2.FileStorage (as a map `name` when given)."""
        write(self, fs, name)

    def read(self, fn) -> None:
        """Apply the options and flags of settings read from a cv2.FileNode (the model
        must match; the weights are not reloaded)."""
        read(self, fn)


def cached_weights_path(model, tag: str | None = None) -> str | None:
    """The cache file `create(name, weights=tag)` loaded for `model` (a ModelDef; tag None:
    the model's default), if any."""
    from cvflow.weights import cached_file

    path = cached_file(model.name, tag, model.checkpoint)
    return str(path) if path else None


def section_name(algo) -> str:
    """getDefaultName() as a FileStorage key (keys allow only [A-Za-z0-9_ -])."""
    return algo.getDefaultName().replace(".", "_")


def weights_sha256(algo) -> str:
    """sha256 of the weights file the algorithm was created from; for weights given as a
    mapping of arrays, of the arrays (key names and float32 bytes, keys sorted)."""
    path = algo._weights_path
    if path:
        return file_sha256(path)
    return arrays_sha256({key: to_numpy(value) for key, value in _flatten(algo._params)})


def file_sha256(path) -> str:
    """sha256 (hex) of a weights file, read in chunks."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    except OSError as e:
        raise os_error("read weights file", path, e) from None
    return digest.hexdigest()


def arrays_sha256(flat) -> str:
    """sha256 (hex) of weights given as arrays: key names and float32 bytes, keys sorted."""
    digest = hashlib.sha256()
    for key in sorted(flat):
        digest.update(key.encode() + b"\0")
        digest.update(np.ascontiguousarray(flat[key], dtype="<f4").tobytes())
    return digest.hexdigest()


def _flatten(params, prefix=""):
    for key, value in params.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def write(algo, fs, name: str | None = None) -> None:
    """Write the settings into an open cv2.FileStorage: as the fields of the structure being
    written (name None, as cv2.Algorithm.write(fs)) or as a map called `name`."""
    import cv2

    if not isinstance(fs, cv2.FileStorage):
        raise CvflowTypeError(f"`fs` must be a cv2.FileStorage opened for writing, got {type(fs).__name__}")
    if name is not None:
        fs.startWriteStruct(name, cv2.FileNode_MAP)
    fs.write("model", algo.name)
    fs.write("flags", int(algo.getFlags()))
    fs.startWriteStruct("options", cv2.FileNode_MAP)
    for key, value in algo.options.items():
        fs.write(key, _storable(value))
    fs.endWriteStruct()
    fs.startWriteStruct("weights", cv2.FileNode_MAP)
    fs.write("path", algo._weights_path or "")
    fs.write("sha256", weights_sha256(algo))
    fs.endWriteStruct()
    if name is not None:
        fs.endWriteStruct()


def _storable(value):
    """FileStorage holds int32 (cv2 writes a larger Python int as `true`!): bools as 0/1,
    larger ints as reals (exact up to 2**53), read back as ints by `_value`."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) and not -2**31 <= value < 2**31:
        return float(value)
    return value


def save(algo, filename) -> None:
    """Write the settings to `filename` (.yml, .yaml, .xml or .json: cv2.FileStorage's
    formats), as one map named after getDefaultName()."""
    import cv2

    from cvflow.outputs import check_output_file

    path = os.fspath(check_output_file(filename, "filename"))
    if not path.lower().endswith((".yml", ".yaml", ".xml", ".json", ".yml.gz", ".xml.gz")):
        raise InputError(f"filename {path}: cv2.FileStorage writes .yml, .yaml, .xml or .json files")
    fs = cv2.FileStorage(path, cv2.FILE_STORAGE_WRITE)
    try:
        write(algo, fs, section_name(algo))
    finally:
        fs.release()


def _settings_node(fn):
    """The map holding `model`: `fn` itself, or the one map inside it (a file's top level)."""
    if fn.isMap() and not fn.getNode("model").empty():
        return fn
    if fn.isMap():
        inner = [fn.getNode(k) for k in fn.keys()]
        inner = [n for n in inner if n.isMap() and not n.getNode("model").empty()]
        if len(inner) == 1:
            return inner[0]
    raise InputError("`fn` holds no cvflow settings (a map with `model`, `options`, ... as save() writes)")


def read(algo, fn) -> None:
    """Apply settings written by `write`/`save` from a cv2.FileNode: the options and flags.

    The model must be the algorithm's own (InputError otherwise); the weights entry is a
    record of provenance and is not loaded (create() loads weights).
    """
    import cv2

    if not isinstance(fn, cv2.FileNode):
        raise CvflowTypeError(f"`fn` must be a cv2.FileNode (e.g. FileStorage(...).getFirstTopLevelNode()), "
                              f"got {type(fn).__name__}")
    node = _settings_node(fn)
    model = node.getNode("model").string()
    if model != algo.name:
        raise InputError(f"the settings are for model {model!r}, this algorithm is {algo.name!r}")
    options = node.getNode("options")
    for key in (options.keys() if options.isMap() else ()):
        algo.set(key, _value(options.getNode(key), algo.options.get(key)))
    flags = node.getNode("flags")
    if not flags.empty():
        algo.setFlags(int(flags.real()))


def _value(node, current):
    """A FileNode's value in the type of the option's current value (bools are stored as 0/1)."""
    if node.isString():
        return node.string()
    value = node.real()
    if node.isInt():
        value = int(value)
        return bool(value) if isinstance(current, bool) and value in (0, 1) else value
    if isinstance(current, int) and not isinstance(current, bool) and value.is_integer():
        return int(value)  # an int beyond int32, stored as a real
    return value
