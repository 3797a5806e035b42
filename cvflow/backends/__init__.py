"""Backends: the device a model runs on, chosen once at `create()` (`make_backend`).

`base.Backend` (every op, generic over NumPy/CuPy arrays; prepared layers, constants,
per-pass memos), `cpu.CPUBackend` (the NumPy ops and the activation arena),
`cuda.backend.CudaBackend` (the kernels of `kernels/*.cu` on a CuPy or emulator executor).

Device choice lives here: `make_backend` builds the CPU backend, or the CUDA backend on
the executor of `cvflow.backends.cuda.executor.get_executor` (CuPy on a device; the CPU
emulator inside `cvflow.testing.cuda_emulator()`, the one test hook). The backends are
imported on first use and CuPy lazily: ``import cvflow`` never imports it.
"""
from __future__ import annotations

import importlib

from cvflow.errors import InputError

DEVICES = ("auto", "cpu", "cuda")


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


def make_backend(device: str, reuse_bytes: int = 0):
    """The backend for a user's ``device`` argument. reuse_bytes: the CPU arena's floor
    (`ModelDef.reuse_bytes`). Raises InputError for an unknown name, DeviceError when
    "cuda" has no CuPy or no device."""
    dev = resolve_device(device)
    if dev == "cpu":
        from cvflow.backends.cpu import CPUBackend

        return CPUBackend(reuse_bytes)
    from cvflow.backends.cuda.executor import get_executor

    ex = get_executor()  # DeviceError without CuPy and a device
    from cvflow.backends.cuda.backend import CudaBackend

    return CudaBackend(ex)


def backend_of(params):
    """The backend `params` were placed on (or `params` itself when it is a backend); a
    fresh CPU backend for a plain dict or None (direct calls of a model's functions in
    tests and scripts)."""
    from cvflow.backends.base import Backend
    from cvflow.backends.cpu import CPUBackend

    if isinstance(params, Backend):
        return params
    be = getattr(params, "backend", None)
    return CPUBackend() if be is None else be
