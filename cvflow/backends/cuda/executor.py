"""Executors: where the CUDA backend's arrays live and its kernels run.

The CUDA backend's Python code (allocation, launch configuration, kernel order, matrix
products) is one code path; an executor is the small adapter underneath it:

- :class:`CupyExecutor` (a GPU): CuPy arrays, ``kernels/*.cu`` compiled by NVRTC
  (``cupy.RawModule``, once per file and device, on first use), cuBLAS products.
- :class:`EmulatorExecutor` (tests only, no GPU): NumPy arrays, the same ``.cu`` sources
  built by g++ with ``kernels/emu.h`` and launched through ctypes
  (:mod:`cvflow.backends.cuda.emulator`), NumPy products.

``get_executor()`` returns the emulator inside :func:`cvflow.testing.cuda_emulator`,
else the (cached) CuPy executor of the device.
"""
from __future__ import annotations

import threading

import numpy as np

from cvflow.errors import DeviceError


class Executor:
    """Base of both executors. Kernels are named "file:function", e.g.
    "corr_lookup:raft_corr_lookup" -> ``extern "C" __global__ void raft_corr_lookup``
    in ``kernels/corr_lookup.cu``. Kernel arguments: C-contiguous device arrays whose
    dtype matches the parameter (float32, int32, float64) and NumPy scalars of the
    parameter's type (np.int32, np.float32, np.float64)."""

    name = "base"
    xp = np

    def empty(self, shape, dtype=np.float32):
        return self.xp.empty(shape, dtype)

    def zeros(self, shape, dtype=np.float32):
        return self.xp.zeros(shape, dtype)

    def asarray(self, host, dtype=np.float32):
        """Host array (or an array of this executor) -> C-contiguous array of `dtype`."""
        return self.xp.ascontiguousarray(self.xp.asarray(host, dtype=dtype))

    def to_host(self, x) -> np.ndarray:
        return np.asarray(x)

    def launch(self, kernel: str, grid: tuple, block: tuple, args: tuple, shared_mem: int = 0):
        raise NotImplementedError

    def matmul(self, a, b, out=None):
        return self.xp.matmul(a, b, out=out)

    def synchronize(self):
        pass

    def free_all(self):
        pass


def _split(kernel):
    stem, sep, func = kernel.partition(":")
    if not sep or not stem or not func:
        raise DeviceError(f'kernel names are "file:function", got {kernel!r}')
    return stem, func


class EmulatorExecutor(Executor):
    """Kernels emulated on the CPU (CUDA threads one after another; large grids in runs of
    whole blocks on a few OS threads); NumPy arrays.
    For tests only: see :func:`cvflow.testing.cuda_emulator`."""

    name = "emulator"
    xp = np

    def launch(self, kernel, grid, block, args, shared_mem=0):
        from cvflow.backends.cuda import emulator

        if shared_mem:
            raise DeviceError("the emulator runs kernels without shared memory; got shared_mem="
                              f"{shared_mem} for {kernel}")
        stem, func = _split(kernel)
        emulator.library(stem).launch(func, grid, block, args)


class CupyExecutor(Executor):
    """Kernels on a CUDA device through CuPy (NVRTC-compiled ``RawModule`` per file)."""

    name = "cupy"

    def __init__(self, device_id=0):
        import cupy

        self.xp = cupy
        self.device_id = device_id
        self.device = cupy.cuda.Device(device_id)
        self._functions = {}
        self._modules = {}

    def asarray(self, host, dtype=np.float32):
        with self.device:
            return self.xp.ascontiguousarray(self.xp.asarray(host, dtype=dtype))

    def empty(self, shape, dtype=np.float32):
        with self.device:
            return self.xp.empty(shape, dtype)

    def zeros(self, shape, dtype=np.float32):
        with self.device:
            return self.xp.zeros(shape, dtype)

    def to_host(self, x):
        return self.xp.asnumpy(x) if isinstance(x, self.xp.ndarray) else np.asarray(x)

    def _function(self, kernel):
        fn = self._functions.get(kernel)
        if fn is None:
            from cvflow.backends.cuda.emulator import kernel_dir

            stem, func = _split(kernel)
            mod = self._modules.get(stem)
            if mod is None:  # NVRTC compiles lazily, at the first get_function
                source = (kernel_dir() / f"{stem}.cu").read_text()
                mod = self._modules[stem] = self.xp.RawModule(code=source, options=("--std=c++17",))
            fn = self._functions[kernel] = mod.get_function(func)
        return fn

    def launch(self, kernel, grid, block, args, shared_mem=0):
        with self.device:
            self._function(kernel)(tuple(grid), tuple(block), tuple(args), shared_mem=shared_mem)

    def matmul(self, a, b, out=None):
        with self.device:
            return self.xp.matmul(a, b, out=out)

    def synchronize(self):
        self.device.synchronize()

    def free_all(self):
        with self.device:
            self.synchronize()
            self.xp.get_default_memory_pool().free_all_blocks()
            self.xp.get_default_pinned_memory_pool().free_all_blocks()


_CUPY: dict = {}
_LOCK = threading.Lock()
# The emulator while inside cvflow.testing.cuda_emulator() (process-wide: the backend's
# thread pool sees it too), with the nesting depth of that context.
_EMULATOR = {"executor": None, "depth": 0}


def get_executor(device_id: int = 0) -> Executor:
    """The executor for CUDA device `device_id`: the emulator inside
    ``cvflow.testing.cuda_emulator()``, else one cached :class:`CupyExecutor` per device.
    Raises DeviceError when CuPy or the device is missing."""
    emu = _EMULATOR["executor"]
    if emu is not None:
        return emu
    with _LOCK:
        ex = _CUPY.get(device_id)
        if ex is None:
            ex = _CUPY[device_id] = _make_cupy(device_id)
        return ex


def push_emulator() -> "EmulatorExecutor":
    """Enter emulation (used by cvflow.testing.cuda_emulator); nests."""
    with _LOCK:
        if _EMULATOR["executor"] is None:
            _EMULATOR["executor"] = EmulatorExecutor()
        _EMULATOR["depth"] += 1
        return _EMULATOR["executor"]


def pop_emulator():
    with _LOCK:
        _EMULATOR["depth"] -= 1
        if _EMULATOR["depth"] == 0:
            _EMULATOR["executor"] = None


def _make_cupy(device_id):
    try:
        import cupy
    except Exception as e:  # any import failure means "no usable CuPy"
        raise DeviceError("device='cuda' needs CuPy (pip install cupy-cuda12x or cupy-cuda13x, the extras "
                          "cuda12 / cuda13 of cvflow-of): "
                          f"importing cupy failed ({e})") from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:
        raise DeviceError(f"device='cuda' needs a CUDA device; CuPy found none ({e})") from None
    if not 0 <= device_id < count:
        raise DeviceError(f"CUDA device {device_id} does not exist ({count} device(s) found)")
    return CupyExecutor(device_id)


# --- helpers shared by the kernel wrappers (cvflow/backends/cuda/k_*.py) ---

BLOCK = 256  # threads per block of the one-element-per-thread kernels
_MAX_ELEMENTS = 2**31 - 1  # kernels index elements with int


def launch_1d(ex, kernel, total, *args):
    """Launch `kernel` with one thread per element of `total` (blocks of BLOCK threads)."""
    total = int(total)
    if total >= _MAX_ELEMENTS:
        raise DeviceError(f"{kernel}: {total} elements exceed a kernel's int index range")
    if total > 0:
        ex.launch(kernel, ((total + BLOCK - 1) // BLOCK,), (BLOCK,), args)


def contiguous(ex, x, dtype=np.float32):
    """x as a C-contiguous array of `dtype` on the executor (no copy when it already is)."""
    return ex.xp.ascontiguousarray(ex.xp.asarray(x), dtype=dtype)


i32, f32, f64 = np.int32, np.float32, np.float64
