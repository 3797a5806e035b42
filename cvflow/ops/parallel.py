"""Memory-bound NumPy passes split into pieces: in cache, and on every core.

NumPy's elementwise loops run on one core but release the GIL, so independent pieces
of a pass run in parallel on a small thread pool. BLAS is threaded on its own: callers
only hand elementwise work (and small BLAS-1/2 calls) to `run`. Work for other array
modules (CuPy) runs in order in the calling thread.

`limited(n)` bounds the pool for the calls made in this thread inside it (the CPU
backend enters it around each forward pass, with the object's `threads`, alongside its
BLAS limit): BLAS products and these passes alternate, never overlap, so n threads in
each never put more than n threads to work.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np

CHUNK = 1 << 16  # elements per in-cache piece of a fused elementwise pass
MAX_WORKERS = 8  # memory-bound passes stop scaling before this many threads

_POOLS: dict = {}  # size -> ThreadPoolExecutor (one per thread count in use)
_POOLS_LOCK = threading.Lock()
_LOCAL = threading.local()  # marks pool threads: nested `run` calls stay in their thread


def cores() -> int:
    """The cores this process may use (its CPU affinity; os.cpu_count off Linux)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def default_threads() -> int:
    """Threads when none are given: $CVFLOW_NUM_THREADS when set, else `cores()`."""
    env = os.environ.get("CVFLOW_NUM_THREADS", "")
    if env.strip().isdigit() and int(env) > 0:
        return int(env)
    return cores()


def workers():
    """Threads used by `run`: the innermost `limited(n)` of this thread, else
    `default_threads()`; at most MAX_WORKERS."""
    n = getattr(_LOCAL, "limit", None) or default_threads()
    return max(1, min(n, MAX_WORKERS))


@contextmanager
def limited(n: int):
    """Within the block, `run` and `map_spans` called from this thread use at most n threads."""
    prev = getattr(_LOCAL, "limit", None)
    _LOCAL.limit = int(n)
    try:
        yield
    finally:
        _LOCAL.limit = prev


def _pool(n):
    pool = _POOLS.get(n)
    if pool is None:
        with _POOLS_LOCK:
            pool = _POOLS.setdefault(n, ThreadPoolExecutor(n, thread_name_prefix="cvflow"))
    return pool


def _reset_pool():
    _POOLS.clear()


if hasattr(os, "register_at_fork"):  # a forked child has none of the parent's threads
    os.register_at_fork(after_in_child=_reset_pool)


def _call(fn, item):
    _LOCAL.busy = True
    try:
        return fn(item)
    finally:
        _LOCAL.busy = False


def run(fn, items, xp=np):
    """[fn(item) for item in items], the calls spread over the thread pool (NumPy only)."""
    items = list(items)
    n = workers()
    if len(items) < 2 or xp is not np or n < 2 or getattr(_LOCAL, "busy", False):
        return [fn(item) for item in items]
    return list(_pool(n).map(lambda item: _call(fn, item), items))


def spans(n, per_item=1, chunk=CHUNK):
    """[(a, b), ...] covering range(n) in runs of about chunk // per_item items: the
    pieces of a pass that applies several in-place ops while each piece is in cache."""
    step = max(1, chunk // max(1, per_item))
    return [(a, min(n, a + step)) for a in range(0, n, step)]


def piece_len(n, per_item=1, xp=np, chunk=CHUNK):
    """Length of the longest piece `map_spans` hands to fn."""
    return min(n, max(1, chunk // max(1, per_item))) if xp is np else n


def map_spans(fn, n, per_item=1, xp=np, chunk=CHUNK):
    """[fn(a, b) for (a, b) in spans(n, per_item, chunk)], in order; each worker thread
    takes one contiguous share of the pieces. Other array modules (CuPy) get one piece."""
    if xp is not np:
        return [fn(0, n)] if n else []
    pieces = spans(n, per_item, chunk)
    k = max(1, min(workers(), len(pieces)))
    shares = [pieces[i * len(pieces) // k:(i + 1) * len(pieces) // k] for i in range(k)]
    done = run(lambda share: [fn(a, b) for a, b in share], shares, xp)
    return [r for share in done for r in share]
