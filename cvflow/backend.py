"""Array-module dispatch and device choice.

This is the only module that imports CuPy, and only lazily: ``import cvflow``
never imports it. Ops get their array module from their input (``get_xp(x)``),
so the device is fixed once, when a model's weights are placed at ``create()``.
"""
from __future__ import annotations

import importlib
import sys

import numpy as np

from cvflow.errors import DeviceError, InputError

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
    """Map a user's ``device`` argument to "cpu" or "cuda"."""
    if not isinstance(device, str) or device not in DEVICES:
        raise InputError(f"`device` must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "auto":
        return "cuda" if gpu_available() else "cpu"
    if device == "cuda" and not gpu_available():
        raise DeviceError("device='cuda' needs CuPy (pip install cvflow[cuda12] or "
                          "cvflow[cuda13]) and a CUDA device; none was found")
    return device


def module_for(device: str):
    """Array module for a resolved device name."""
    return _import_cupy() if device == "cuda" else np


def to_numpy(x) -> np.ndarray:
    """Host copy of an array from either module."""
    if isinstance(x, np.ndarray):
        return x
    get = getattr(x, "get", None)
    return get() if get is not None else np.asarray(x)


def to_device(x: np.ndarray, device: str):
    """Place a host array on ``device`` ("cpu" or "cuda")."""
    if device == "cuda":
        return module_for("cuda").asarray(x)
    return to_numpy(x)
