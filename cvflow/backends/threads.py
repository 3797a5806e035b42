"""Thread limits of one forward pass on the CPU: BLAS, cvflow's own pool and OpenCV's.

A CPU forward pass runs BLAS's threads (products outside the pool) and cvflow's pool
(`cvflow.ops.parallel`: memory-bound passes, and most products at one BLAS thread
each) in turn, never at once, so the same `n` bounds both. OpenCV runs at one thread
during the pass: its calls there (thresholds, reductions, filters) sit inside the
pool's pieces, and an OpenCV worker woken by a call from the calling thread spins
with sched_yield against the pool's threads afterwards (perf, RAFT-small at 2
threads). Outside the pass, every pool is back at the size it had: the caller's other
NumPy/OpenCV code is untouched.

Why it matters: OpenBLAS's threads spin while they wait for each other. On a machine
busier than its cores (other processes, or several models side by side), a thread that
loses its core stalls the others on every product, and a pass can take 5x longer than
on one thread (README, "CPU speed, threads and memory"). A process that shares the
machine should pass its share.

BLAS pools are found and set with threadpoolctl (numpy's OpenBLAS, and OpenCV's own
copy when it has one). Limits are process-wide, as the pools are: two threads calling
objects with different limits at the same time see either limit.
"""
from __future__ import annotations

import numbers
import threading
from contextlib import ExitStack, contextmanager

from cvflow.errors import CvflowTypeError, InputError
from cvflow.ops import parallel

_CONTROLLER = None
_LOCK = threading.Lock()


def check_threads(threads, name="threads"):
    """A user's `threads`: None or an int >= 1 (returned as int or None)."""
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral):
        raise CvflowTypeError(f"`{name}` must be an int >= 1 or None, got {threads!r} ({type(threads).__name__})")
    if threads < 1:
        raise InputError(f"`{name}` must be an int >= 1 or None, got {threads}")
    return int(threads)


def _controller():
    """threadpoolctl's view of the BLAS libraries loaded now (made once: inspecting the
    process's libraries takes milliseconds; numpy and OpenCV are loaded before any pass)."""
    global _CONTROLLER
    if _CONTROLLER is None:
        from threadpoolctl import ThreadpoolController

        with _LOCK:
            if _CONTROLLER is None:
                _CONTROLLER = ThreadpoolController()
    return _CONTROLLER


@contextmanager
def _cv2_threads(n):
    import cv2

    prev = cv2.getNumThreads()
    if prev == n:
        yield
        return
    cv2.setNumThreads(n)
    try:
        yield
    finally:
        cv2.setNumThreads(prev)


_BLAS_LIBS = None


def _set_blas(n):
    """Set every BLAS library's threads to n: direct calls (~2 us), for the pool's
    products (`cvflow.ops.parallel.run(..., blas_one=True)`) inside a `limited` block,
    which restores the caller's setting on exit."""
    global _BLAS_LIBS
    if _BLAS_LIBS is None:
        _BLAS_LIBS = list(_controller().select(user_api="blas").lib_controllers)
    for lib in _BLAS_LIBS:
        lib.set_num_threads(n)


@contextmanager
def limited(n: int):
    """Within the block, BLAS and cvflow's pool use at most n threads (n >= 1), OpenCV one.
    Products that cvflow splits itself run in its pool with BLAS at one thread
    (`cvflow.ops.parallel.matmul`): still n threads at most."""
    with ExitStack() as stack:
        stack.enter_context(_controller().limit(limits=n, user_api="blas"))
        stack.enter_context(parallel.limited(n, blas=_set_blas))
        stack.enter_context(_cv2_threads(1))
        yield
