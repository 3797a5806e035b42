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
# Numeric modes of `create(precision=)`: "fp32" (exact parity with the authors' code),
# "tf32" (products on TF32 tensor cores, storage fp32), "fp16"/"bf16" (half storage,
# fp32 accumulation). The CPU computes in fp32 only.
PRECISIONS = ("fp32", "tf32", "fp16", "bf16")
CPU_PRECISIONS = ("fp32",)
# The GPU's default mode: the fastest one that keeps RAFT-small's EPE on the real pairs
# within 1% of fp32 and every golden case within 0.05 px mean of fp32 (README,
# "Precision"); bench/precision_accuracy.py measures it.
GPU_DEFAULT_PRECISION = "fp32"


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


def check_precision(precision) -> str | None:
    """A user's ``precision`` argument checked (None: the device's default)."""
    if precision is None:
        return None
    if not isinstance(precision, str) or precision.strip().lower() not in PRECISIONS:
        raise InputError(f"`precision` must be one of {', '.join(PRECISIONS)} or None (the device's default), "
                         f"got {precision!r}")
    return precision.strip().lower()


def resolve_precision(precision, dev: str) -> str:
    """The mode a backend of device `dev` ("cpu" / "cuda") runs for a user's ``precision``:
    None -> the device's default; the CPU refuses everything but fp32."""
    precision = check_precision(precision)
    if dev == "cpu":
        if precision not in (None, *CPU_PRECISIONS):
            raise InputError(f"`precision` {precision!r} needs the CUDA backend: the CPU backend computes in "
                             f"{', '.join(CPU_PRECISIONS)} only (device='cpu' allows precision="
                             f"{', '.join(map(repr, CPU_PRECISIONS))} or None)")
        return "fp32"
    return GPU_DEFAULT_PRECISION if precision is None else precision


def make_backend(device: str, reuse_bytes: int = 0, threads: int | None = None, precision: str | None = None):
    """The backend for a user's ``device`` argument. reuse_bytes: the CPU arena's floor
    (`ModelDef.reuse_bytes`); threads: the CPU's threads per pass (None: the cores this
    process may use); precision: one of PRECISIONS or None (the device's default, see
    `resolve_precision`). Raises InputError for an unknown name or a mode the device
    lacks, DeviceError when "cuda" has no CuPy or no device."""
    check_precision(precision)  # a bad value fails before any device is looked for
    dev = resolve_device(device)
    if dev == "cpu":
        from cvflow.backends.cpu import CPUBackend

        resolve_precision(precision, dev)
        return CPUBackend(reuse_bytes, threads)
    from cvflow.backends.cuda.executor import get_executor

    ex = get_executor()  # DeviceError without CuPy and a device
    from cvflow.backends.cuda.backend import CudaBackend

    return CudaBackend(ex, resolve_precision(precision, dev))


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
