"""Device arrays of the CUDA emulator: every array op, copy, sync and allocation seen.

On a GPU, each CuPy expression is a kernel launch of its own, each ``cupy.asarray`` of a
host array a host->device copy, each ``float(x)`` a copy back and a sync. The emulator's
arrays are :class:`DeviceArray`, a NumPy subclass, and its array module is
:class:`TracedNumpy`, NumPy behind a namespace: both report to one :class:`Tracer`, which

- counts kernel launches (by name), matrix products (with FLOPs), array ops outside the
  executor (by name), host<->device copies (and bytes), syncs and allocations, and keeps
  the live device bytes (each buffer is freed when its last view dies) and their peak,
  per phase (``Tracer.phase``) and in total (see :mod:`cvflow.backends.cuda.profile`);
- in *capture* mode (``Tracer.capturing``, see the executor's graph capture) raises
  :class:`~cvflow.errors.DeviceError` where a CUDA graph capture would fail: an array op
  that is not an executor call, a host<->device copy, a sync, an allocation once the graph
  has been replayed;
- in *dry* mode (``Tracer.dry``) lets kernels and products skip their arithmetic (shapes,
  launches and allocations unchanged), so full-size and 4K profiles take seconds.

A host NumPy array mixed into an op with device arrays is an implicit copy (CuPy refuses
it): counted as a host->device copy, an error during capture.
"""
from __future__ import annotations

import contextlib
import threading
import weakref
from collections import Counter

import numpy as np

from cvflow.errors import DeviceError

# NumPy functions that make views or read metadata: no kernel on a GPU.
_VIEWS = frozenset({
    "reshape", "transpose", "swapaxes", "moveaxis", "rollaxis", "broadcast_to", "broadcast_arrays", "squeeze",
    "expand_dims", "atleast_1d", "atleast_2d", "atleast_3d", "shape", "ndim", "size", "result_type",
    "may_share_memory", "shares_memory", "can_cast", "iscomplexobj", "isrealobj", "ndim", "split", "array_split",
    "diagonal", "real", "imag", "ravel",
})
# Creation functions that allocate without writing (no kernel).
_EMPTY = frozenset({"empty", "empty_like"})
# Conversions: from a host array, a host->device copy; from a device array, a view or a copy op.
_CONVERT = frozenset({"asarray", "array", "ascontiguousarray", "asanyarray"})


class Counts:
    """What one phase (or the whole pass) did on the device."""

    def __init__(self):
        self.launches: Counter = Counter()   # kernel "file:function" -> launches
        self.ops: Counter = Counter()        # array ops outside the executor, by name
        self.matmuls = 0                     # every product (executor's and array code's)
        self.flops = 0
        self.ex_matmuls = 0                  # products through the executor (cuBLAS)
        self.h2d = self.h2d_bytes = self.d2h = self.d2h_bytes = 0
        self.syncs = self.allocs = self.alloc_bytes = 0
        self.peak = 0                        # peak live device bytes while this phase ran
        self.entries = 0                     # times the phase was entered

    @property
    def executor_calls(self) -> int:
        """Kernel launches plus executor products: one host dispatch each."""
        return sum(self.launches.values()) + self.ex_matmuls

    @property
    def other_ops(self) -> int:
        return sum(self.ops.values())

    def per_entry(self, value):
        return value / max(1, self.entries)


class Tracer:
    """The counters of one emulator executor (see the module docstring)."""

    def __init__(self):
        self.dry = False
        self.capturing = False       # inside a graph capture: rule-breaking calls raise
        self.replayed = False        # a graph of this capture was replayed: no new buffers
        self.recorder = None         # list receiving executor calls while capturing
        self.live = 0
        self._owners: dict = {}      # id(buffer) -> bytes, for buffers alive on the device
        self._lock = threading.Lock()
        self._records: list = []     # open Counts (the pass's, then the current phase's)
        self._phase_stack: list = []

    # -- recording --------------------------------------------------------------------
    @contextlib.contextmanager
    def record(self):
        """Counts of everything inside the block: yields a `Counts` (its `phases` dict too)."""
        c = Counts()
        c.phases = {}
        c.peak = self.live
        self._records.append(c)
        try:
            yield c
        finally:
            self._records.remove(c)

    @contextlib.contextmanager
    def phase(self, name, count=True):
        """Attribute what happens inside to phase `name` of every open record (innermost
        phase wins when phases nest); count: add one to the phase's entries."""
        opened = []
        for rec in [r for r in self._records if hasattr(r, "phases")]:
            ph = rec.phases.get(name)
            if ph is None:
                ph = rec.phases[name] = Counts()
            ph.entries += count
            ph.peak = max(ph.peak, self.live)
            opened.append(ph)
        self._phase_stack.append(opened)
        try:
            yield
        finally:
            self._phase_stack.pop()

    def _targets(self):
        out = list(self._records)
        if self._phase_stack:
            out += self._phase_stack[-1]
        return out

    # -- events -------------------------------------------------------------------------
    def launch(self, kernel):
        for c in self._targets():
            c.launches[kernel] += 1

    def matmul(self, flops, executor):
        for c in self._targets():
            c.matmuls += 1
            c.flops += flops
            c.ex_matmuls += executor

    def op(self, name):
        if self.capturing:
            raise DeviceError(f"graph capture: array op {name!r} outside the executor (a CUDA graph records "
                              "only the executor's kernels and products)")
        for c in self._targets():
            c.ops[name] += 1

    def copy(self, direction, nbytes, what=""):
        if self.capturing:
            raise DeviceError(f"graph capture: a {'host->device' if direction == 'h2d' else 'device->host'} "
                              f"copy{what} inside the captured pass")
        for c in self._targets():
            if direction == "h2d":
                c.h2d += 1
                c.h2d_bytes += nbytes
            else:
                c.d2h += 1
                c.d2h_bytes += nbytes

    def sync(self, what="a synchronisation"):
        if self.capturing:
            raise DeviceError(f"graph capture: {what} inside the captured pass")
        for c in self._targets():
            c.syncs += 1

    def alloc(self, owner):
        """Register buffer `owner` (an ndarray owning its memory) as device memory."""
        key = id(owner)
        with self._lock:
            if key in self._owners:
                return
            if self.capturing and self.replayed:
                raise DeviceError(f"graph capture: a new {owner.nbytes}-byte buffer after the graph's first "
                                  "replay (its buffers are fixed when it is captured)")
            n = owner.nbytes
            self._owners[key] = n
            self.live += n
            live = self.live
        weakref.finalize(owner, self._free, key)
        for c in self._targets():
            c.allocs += 1
            c.alloc_bytes += n
            c.peak = max(c.peak, live)
        for opened in self._phase_stack:
            for c in opened:
                c.peak = max(c.peak, live)

    def _free(self, key):
        with self._lock:
            self.live -= self._owners.pop(key, 0)

    def owns(self, owner) -> bool:
        return id(owner) in self._owners


TRACER = Tracer()  # the emulator's (one emulator per process, see executor.push_emulator)


def _owner(a):
    """The ndarray that owns a's memory (end of the .base chain)."""
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def _plain(x):
    """x with DeviceArrays as plain ndarray views (lists and tuples recursively)."""
    if isinstance(x, DeviceArray):
        return x.view(np.ndarray)
    if isinstance(x, (list, tuple)):
        return type(x)(_plain(v) for v in x)
    return x


def _host_operand(x):
    """Whether x is a host array an op would have to copy to the device (not a scalar)."""
    return type(x) is np.ndarray and x.ndim > 0


def _check_host(name, args):
    for a in args:
        items = a if isinstance(a, (list, tuple)) else (a,)
        for v in items:
            if _host_operand(v):
                TRACER.copy("h2d", v.nbytes, f" (a host array operand of {name})")


def device(a, new_op=None):
    """a (ndarray) as a DeviceArray, registering its buffer when it is a new one; with
    new_op, a new buffer also counts as that op (its kernel)."""
    if not isinstance(a, np.ndarray):
        return a
    owner = _owner(a)
    if not TRACER.owns(owner):
        if new_op is not None:
            TRACER.op(new_op)
        TRACER.alloc(owner)
    return a if isinstance(a, DeviceArray) else a.view(DeviceArray)


def _wrap(result, name, counted):
    if isinstance(result, (list, tuple)):
        return type(result)(_wrap(r, name, counted) for r in result)
    return device(result, None if counted else name)


def _matmul_flops(a, b):
    a, b = np.shape(a), np.shape(b)
    if len(a) < 1 or len(b) < 1:
        return 0
    m = a[-2] if len(a) > 1 else 1
    k = a[-1]
    n = b[-1] if len(b) > 1 else 1
    batch = int(np.prod(np.broadcast_shapes(a[:-2], b[:-2]))) if len(a) > 2 or len(b) > 2 else 1
    return 2 * batch * m * n * k


def dry_matmul(a, b, out=None):
    """The product's result buffer without the arithmetic (dry mode)."""
    shape = np.broadcast_shapes(np.shape(a)[:-2], np.shape(b)[:-2]) + (np.shape(a)[-2], np.shape(b)[-1])
    return out if out is not None else np.empty(shape, np.result_type(a, b))


class DeviceArray(np.ndarray):
    """An emulated device array: a NumPy array whose ops report to the `Tracer`."""

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        name = ufunc.__name__ if method == "__call__" else f"{ufunc.__name__}.{method}"
        _check_host(name, inputs)
        if ufunc is np.matmul:
            TRACER.op("matmul")
            TRACER.matmul(_matmul_flops(inputs[0], inputs[1]), False)
        else:
            TRACER.op(name)
        args = _plain(inputs)
        outs = kwargs.get("out")
        if outs is not None:
            kwargs["out"] = _plain(outs)
        if TRACER.dry and ufunc is np.matmul and method == "__call__":
            result = dry_matmul(*args[:2], out=kwargs["out"][0] if outs else None)
        else:
            with np.errstate(all="ignore") if TRACER.dry else contextlib.nullcontext():
                result = getattr(ufunc, method)(*args, **kwargs)
        if outs is not None:
            return outs if isinstance(result, tuple) else outs[0]
        if isinstance(result, np.generic):  # a full reduction: a 0-d device array, as CuPy's
            result = np.asarray(result)
        return _wrap(result, name, True)

    def __array_function__(self, func, types, args, kwargs):
        name = func.__name__
        _check_host(name, args)
        counted = False
        if name not in _VIEWS and name not in _EMPTY:
            TRACER.op(name)
            counted = True
        with np.errstate(all="ignore") if TRACER.dry else contextlib.nullcontext():
            result = func(*_plain(args), **{k: _plain(v) for k, v in kwargs.items()})
        return _wrap(result, name, counted or name in _EMPTY)

    # ndarray methods that copy without going through a ufunc
    def copy(self, order="C"):
        TRACER.op("copy")
        return device(np.ndarray.copy(self.view(np.ndarray), order))

    def astype(self, dtype, order="K", casting="unsafe", subok=True, copy=True):
        if not copy and np.dtype(dtype) == self.dtype:
            return self
        TRACER.op("astype")
        return device(self.view(np.ndarray).astype(dtype, order=order, casting=casting, copy=copy))

    def fill(self, value):
        TRACER.op("fill")
        np.ndarray.fill(self, value)

    def __setitem__(self, key, value):
        if _host_operand(value):
            TRACER.copy("h2d", value.nbytes, " (a host array assigned into a device array)")
        TRACER.op("setitem")
        np.ndarray.__setitem__(self.view(np.ndarray), key, _plain(value))

    def __getitem__(self, key):
        result = np.ndarray.__getitem__(self, key)
        if isinstance(result, np.generic):  # one element: a 0-d device array, as CuPy's
            result = np.ndarray.__getitem__(self, (key if isinstance(key, tuple) else (key,)) + (Ellipsis,))
        if isinstance(result, np.ndarray):
            return device(result, "getitem")  # basic indexing: a view; fancy: a gather op
        return result

    # device -> host: a copy and a sync
    def _to_host(self, what):
        TRACER.sync(f"{what} of a device value (a sync)")
        TRACER.copy("d2h", self.itemsize, f" ({what})")

    def __float__(self):
        self._to_host("float()")
        return float(self.view(np.ndarray))

    def __int__(self):
        self._to_host("int()")
        return int(self.view(np.ndarray))

    def __bool__(self):
        self._to_host("bool()")
        return bool(self.view(np.ndarray))

    def __index__(self):
        self._to_host("an index")
        return self.view(np.ndarray).__index__()

    def item(self, *args):
        self._to_host("item()")
        return self.view(np.ndarray).item(*args)

    def tolist(self):
        self._to_host("tolist()")
        return self.view(np.ndarray).tolist()


class TracedNumpy:
    """The emulator's array module: NumPy, with arrays it makes on the device (`DeviceArray`).

    Functions called with device arrays dispatch to `DeviceArray`'s hooks; called with none
    (creations: empty, zeros, arange, asarray of host data) their result is a new device
    buffer: an allocation, plus a host->device copy for a conversion of host data, or an
    op (the fill kernel) for anything else but `empty`.
    """

    __name__ = "cvflow.emulator.xp"
    ndarray = DeviceArray

    def __init__(self):
        self._cache = {}

    def __getattr__(self, name):
        attr = getattr(np, name)
        if isinstance(attr, type) or not callable(attr) or name.startswith("_"):
            return attr
        fn = self._cache.get(name)
        if fn is None:
            fn = self._cache[name] = self._wrap(name, attr)
        return fn

    @staticmethod
    def _wrap(name, attr):
        def call(*args, **kwargs):
            flat = [v for a in (*args, *kwargs.values()) for v in (a if isinstance(a, (list, tuple)) else (a,))]
            if any(isinstance(v, DeviceArray) for v in flat):
                if name in _CONVERT:  # a device array: a view, or a copy op when dtype/layout change
                    return _wrap(attr(*_plain(args), **kwargs), name, False)
                return attr(*args, **kwargs)  # dispatches to DeviceArray's hooks
            result = attr(*args, **kwargs)
            if isinstance(result, np.ndarray) and name in _CONVERT:
                if isinstance(args[0], np.ndarray) or isinstance(args[0], (list, tuple)):
                    TRACER.copy("h2d", result.nbytes, f" ({name} of host data)")
                return device(result if result.base is None and result is not args[0] else result.copy())
            if name in _EMPTY:
                return _wrap(result, name, True)
            return _wrap(result, name, False)

        call.__name__ = name
        return call


XP = TracedNumpy()
DeviceArray.xp = XP  # cvflow.arrays.get_xp(device array) -> XP
