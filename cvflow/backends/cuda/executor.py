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

import contextlib
import threading

import numpy as np

from cvflow.backends.cuda.rounding import HALF as _HALF
from cvflow.backends.cuda.rounding import emulated_matmul as _emulated_matmul
from cvflow.errors import DeviceError


class Executor:
    """Base of both executors. Kernels are named "file:function", e.g.
    "corr_lookup:raft_corr_lookup" -> ``extern "C" __global__ void raft_corr_lookup``
    in ``kernels/corr_lookup.cu``. Kernel arguments: C-contiguous device arrays whose
    dtype matches the parameter (float32, int32, float64) and NumPy scalars of the
    parameter's type (np.int32, np.float32, np.float64)."""

    name = "base"
    xp = np
    math = "fp32"  # the products' mode: "fp32", or "tf32" (operands rounded to TF32); see with_math

    def with_math(self, math: str) -> "Executor":
        """This executor with its products in mode `math` ("fp32"; "tf32": TF32 tensor
        cores; "fp16"/"bf16": fp32 products of half storage, which the kernels handle). A
        backend holds the view of its own precision, so objects of different precisions
        share one device. The view shares the executor's state (one instance dictionary:
        compiled kernels, cuBLAS handles, capture buffers, tracer); only `math` differs."""
        if math == self.math:
            return self
        key = (type(self), math)
        cls = _VIEW_CLASSES.get(key)
        if cls is None:
            cls = _VIEW_CLASSES[key] = type(f"{type(self).__name__}[{math}]", (type(self),), {"math": math})
        view = object.__new__(cls)
        view.__dict__ = self.__dict__
        return view

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

    def capture(self, pool=None):
        """Context manager: the executor calls inside are captured into a graph instead of
        run (``with ex.capture() as g: ...``; then ``g.graph.replay()``). pool: a
        :class:`GraphPool` shared by graphs whose buffers may be reused together."""
        raise DeviceError(f"the {self.name} executor cannot capture graphs")


class GraphPool:
    """Buffers of captured graphs. Once one of its graphs was replayed, a capture into
    the pool may not allocate: the replayed graph's buffers are fixed."""

    def __init__(self):
        self.replayed = False


class Captured:
    """What ``ex.capture()`` yields; `graph` is set when the block ends without error."""

    graph = None


_VIEW_CLASSES: dict = {}  # (executor class, math) -> the class of with_math's views


def _split(kernel):
    stem, sep, func = kernel.partition(":")
    if not sep or not stem or not func:
        raise DeviceError(f'kernel names are "file:function", got {kernel!r}')
    return stem, func


class EmulatorExecutor(Executor):
    """Kernels emulated on the CPU (CUDA threads one after another; large grids in runs of
    whole blocks on a few OS threads); arrays are :class:`~cvflow.backends.cuda.trace.DeviceArray`
    (NumPy arrays whose ops, copies, syncs and allocations the executor's ``tracer`` sees).
    For tests only: see :func:`cvflow.testing.cuda_emulator`."""

    name = "emulator"

    def __init__(self):
        from cvflow.backends.cuda import trace

        self.tracer = trace.TRACER
        self.xp = trace.XP
        self._trace = trace

    def _device(self, x, what):
        if not isinstance(x, self._trace.DeviceArray):
            raise DeviceError(f"{what} must be a device array (the executor's), got a host "
                              f"{type(x).__name__}: copy it with asarray first")
        return x.view(np.ndarray)

    def to_host(self, x) -> np.ndarray:
        if not isinstance(x, self._trace.DeviceArray):
            return np.asarray(x)
        self.tracer.sync("to_host")
        self.tracer.copy("d2h", x.nbytes, " (to_host)")
        return np.array(x.view(np.ndarray), copy=True)

    def launch(self, kernel, grid, block, args, shared_mem=0):
        from cvflow.backends.cuda import emulator

        if shared_mem:
            raise DeviceError("the emulator runs kernels without shared memory; got shared_mem="
                              f"{shared_mem} for {kernel}")
        stem, func = _split(kernel)
        for i, a in enumerate(args):
            if isinstance(a, np.ndarray) and not isinstance(a, self._trace.DeviceArray):
                raise DeviceError(f"{kernel} argument {i} is a host array: kernels take device arrays")
        rec = self.tracer.recorder
        if rec is not None:  # capturing a graph: the launch is recorded, run at replay
            rec.append(("launch", kernel, grid, block, args))
            self.tracer.launch(kernel)
            return
        self.tracer.launch(kernel)
        emulator.library(stem).launch(func, grid, block, args, dry=self.tracer.dry)

    def matmul(self, a, b, out=None):
        trace = self._trace
        pa, pb = self._device(a, "matmul's a"), self._device(b, "matmul's b")
        if pa.dtype != pb.dtype and {pa.dtype, pb.dtype} & _HALF:
            raise DeviceError(f"matmul's operands must share one storage type, got {pa.dtype} and {pb.dtype}")
        if out is None:
            shape = np.broadcast_shapes(pa.shape[:-2], pb.shape[:-2]) + (pa.shape[-2], pb.shape[-1])
            out = self.empty(shape, np.result_type(pa, pb))
        po = self._device(out, "matmul's out")
        self.tracer.matmul(trace._matmul_flops(pa, pb), True)
        rec = self.tracer.recorder
        if rec is not None:
            rec.append(("matmul", a, b, out, self.math))
        elif not self.tracer.dry:
            _emulated_matmul(pa, pb, po, self.math)
        return out

    def synchronize(self):
        self.tracer.sync("synchronize()")

    @contextlib.contextmanager
    def capture(self, pool=None):
        """Capture as CUDA would: executor calls are recorded, not run; array ops outside
        the executor, host<->device copies, syncs (and allocations, once a graph of `pool`
        was replayed) raise DeviceError. The graph keeps every buffer it touches alive."""
        tr = self.tracer
        if tr.recorder is not None:
            raise DeviceError("graph capture: a capture is already in progress")
        pool = GraphPool() if pool is None else pool
        held = Captured()
        tr.recorder, tr.capturing, tr.replayed = [], True, pool.replayed
        try:
            yield held
            from cvflow.backends.cuda.emulator import EmulatorGraph

            held.graph = EmulatorGraph(self, tr.recorder, pool)
        finally:
            tr.recorder, tr.capturing, tr.replayed = None, False, False


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
        self._cublas = {}  # math mode -> this executor's own cuBLAS handle (gemm)

    def asarray(self, host, dtype=np.float32):
        with self.device:
            return self.xp.ascontiguousarray(self.xp.asarray(host, dtype=dtype))

    _held = None  # while capturing: the buffers made, kept alive with the graph

    def empty(self, shape, dtype=np.float32):
        with self.device:
            return self._hold(self.xp.empty(shape, dtype))

    def zeros(self, shape, dtype=np.float32):
        with self.device:
            return self._hold(self.xp.zeros(shape, dtype))

    def _hold(self, a):
        # A buffer made during a capture is the graph's: were it returned to the pool when
        # Python drops it, a later allocation could share memory with the graph's nodes.
        if self._held is not None:
            self._held.append(a)
        return a

    def to_host(self, x):
        return self.xp.asnumpy(x) if isinstance(x, self.xp.ndarray) else np.asarray(x)

    def _function(self, kernel):
        fn = self._functions.get(kernel)
        if fn is None:
            from cvflow.backends.cuda.emulator import kernel_source

            stem, func = _split(kernel)
            mod = self._modules.get(stem)
            if mod is None:  # NVRTC compiles lazily, at the first get_function
                source = kernel_source(stem)
                mod = self._modules[stem] = self.xp.RawModule(code=source, options=("--std=c++17",))
            fn = self._functions[kernel] = mod.get_function(func)
        return fn

    def launch(self, kernel, grid, block, args, shared_mem=0):
        with self.device:
            self._function(kernel)(tuple(grid), tuple(block), tuple(args), shared_mem=shared_mem)

    def matmul(self, a, b, out=None):
        with self.device:
            if self.math != "tf32" and a.dtype not in _HALF:  # fp32: CuPy's own matmul
                return self._hold(self.xp.matmul(a, b, out=out))
            from cvflow.backends.cuda import gemm

            return self._hold(gemm.matmul(self, a, b, out))

    def synchronize(self):
        self.device.synchronize()

    @contextlib.contextmanager
    def capture(self, pool=None):
        """Stream capture on a private non-blocking stream (cudaStreamCaptureModeGlobal:
        what CUDA refuses inside a capture raises)."""
        pool = GraphPool() if pool is None else pool
        held = Captured()
        buffers = self._held = []
        try:
            with self.device:
                stream = self.xp.cuda.Stream(non_blocking=True)
                with stream:
                    stream.begin_capture()
                    try:
                        yield held
                    finally:
                        graph = stream.end_capture()
                held.graph = CupyGraph(self, graph, stream, pool)
                held.graph.buffers = buffers
        finally:
            self._held = None

    def free_all(self):
        with self.device:
            self.synchronize()
            self.xp.get_default_memory_pool().free_all_blocks()
            self.xp.get_default_pinned_memory_pool().free_all_blocks()


class CupyGraph:
    """A captured CUDA graph and its private stream; `replay` launches it there and makes
    the null stream wait for it (so copies back see its results)."""

    def __init__(self, ex, graph, stream, pool):
        self.ex, self.graph, self.stream, self.pool = ex, graph, stream, pool

    def replay(self):
        self.pool.replayed = True
        with self.ex.device:
            self.graph.launch(self.stream)
            self.ex.xp.cuda.Stream.null.wait_event(self.stream.record())


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
