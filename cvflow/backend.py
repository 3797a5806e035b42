"""Device choice and array-module dispatch.

`make_backend` builds the backend a model runs on (`cvflow.backends`), once, at
``create()``: the CPU backend, or the CUDA backend on the executor of
`cvflow.backends.cuda.executor.get_executor` (CuPy on a device; the CPU emulator inside
`cvflow.testing.cuda_emulator()`, the one test hook). CuPy is imported lazily: ``import
cvflow`` never imports it. Generic ops take their array module from their input
(``get_xp(x)``).
"""
from __future__ import annotations

import importlib
import sys

import numpy as np

from cvflow.errors import InputError

DEVICES = ("auto", "cpu", "cuda")


def get_xp(x):
    """NumPy or CuPy, whichever module owns array ``x``."""
    if isinstance(x, np.ndarray) or np.isscalar(x):
        return np
    cupy = sys.modules.get("cupy")
    if cupy is not None and isinstance(x, cupy.ndarray):
        return cupy
    return np


def _import_cupy():
    try:
        return importlib.import_module("cupy")
    except Exception:  # any import failure means "no usable CuPy"
        return None


def gpu_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    cupy = _import_cupy()
    if cupy is None:
        return False
    try:
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def resolve_device(device: str) -> str:
    """Map a user's ``device`` argument to "cpu" or "cuda" ("auto": CUDA only when CuPy
    and a device are present; "cuda" is checked when its backend is made)."""
    if not isinstance(device, str) or device not in DEVICES:
        raise InputError(f"`device` must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "auto":
        return "cuda" if gpu_available() else "cpu"
    return device


def make_backend(device: str, reuse_bytes: int = 0, threads: int | None = None):
    """The backend for a user's ``device`` argument. reuse_bytes: the CPU arena's floor
    (`ModelDef.reuse_bytes`); threads: the CPU's threads per pass (None: the cores this
    process may use). Raises InputError for an unknown name, DeviceError when
    "cuda" has no CuPy or no device."""
    dev = resolve_device(device)
    if dev == "cpu":
        from cvflow.backends.cpu import CPUBackend

        return CPUBackend(reuse_bytes, threads)
    from cvflow.backends.cuda.executor import get_executor

    ex = get_executor()  # DeviceError without CuPy and a device
    from cvflow.backends.cuda.backend import CudaBackend

    return CudaBackend(ex)


def to_numpy(x) -> np.ndarray:
    """Host copy of an array from either module."""
    if isinstance(x, np.ndarray):
        return x
    get = getattr(x, "get", None)
    return get() if get is not None else np.asarray(x)
