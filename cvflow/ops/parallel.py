"""Memory-bound NumPy passes split into pieces: in cache, and on every core.

NumPy's elementwise loops run on one core but release the GIL, so independent pieces
of a pass run in parallel on a small thread pool. BLAS is threaded on its own: callers
only hand elementwise work (and small BLAS-1/2 calls) to `run`. Work for other array
modules (CuPy) runs in order in the calling thread.

`limited(n)` bounds the pool for the calls made in this thread inside it (the CPU
backend enters it around each forward pass, with the object's `threads`, alongside its
BLAS limit): BLAS products and these passes alternate, never overlap, so n threads in
each never put more than n threads to work.

Products can run in the pool too (`run(..., blas_one=True)`, `matmul`): one BLAS
thread per piece, each piece a whole product (or a share of its rows or of a stack of
products) in the calling thread of that piece. OpenBLAS's own threads split every
product and then wait for each other by spinning: on the many small products of
RAFT's update loop that synchronisation costs more than the split gains, and a thread
that loses its core to another process stalls the others. The BLAS limit is switched
by a setter that the pass registers (`limited(n, blas=...)`, see
`cvflow.backends.threads`); without one, products stay in BLAS's own threads.
"""
from __future__ import annotations

import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np

# Elements per piece of a fused elementwise pass (4 MiB of float32: L3-resident). Every
# NumPy call in a piece releases and re-takes the GIL; with two threads each re-take
# that finds the other thread holding it sleeps on a futex and costs a wake-up (tens of
# us on this VM). Pieces of 1<<16 made RAFT-small's update loop ~24,000 such switches
# per pair and two threads no faster than one; 1<<20 is the fastest at 1 and 2 threads
# (RAFT-small 436x1024, same run: 1<<19 2.27 s, 1<<20 2.06, 1<<21 2.61 at 2 threads).
CHUNK = 1 << 20
MIN_PIECE = 1 << 16  # elements below which a pass is not cut for more threads
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
def limited(n: int, blas=None):
    """Within the block, `run` and `map_spans` called from this thread use at most n threads.
    blas: a function setting BLAS's thread count (the pass's BLAS limit is n), which lets
    `run(..., blas_one=True)` put products in the pool; None: it runs them in order."""
    prev = getattr(_LOCAL, "limit", None), getattr(_LOCAL, "blas", None)
    _LOCAL.limit = int(n)
    _LOCAL.blas = blas
    try:
        yield
    finally:
        _LOCAL.limit, _LOCAL.blas = prev


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


def run(fn, items, xp=np, blas_one=False):
    """[fn(item) for item in items], the calls spread over the thread pool (NumPy only).
    blas_one: the calls make BLAS products; they go to the pool only where the pass set
    a BLAS setter (`limited`), with BLAS at one thread meanwhile, else run in order here
    (BLAS threads each product)."""
    items = list(items)
    n = workers()
    if len(items) < 2 or xp is not np or n < 2 or getattr(_LOCAL, "busy", False):
        return [fn(item) for item in items]
    if not blas_one:
        return _share(fn, items, n)
    setter = getattr(_LOCAL, "blas", None)
    if setter is None:
        return [fn(item) for item in items]
    setter(1)
    try:
        return _share(fn, items, n)
    finally:
        setter(_LOCAL.limit)


def _share(fn, items, n):
    """Every item once, taken in order by this thread and n - 1 pool threads. The calling
    thread works rather than waits: one wake-up fewer per pass (waking a sleeping thread
    costs 0.1-0.3 ms on a 2-core VM) and its caches stay warm."""
    results = [None] * len(items)
    nxt = itertools.count()  # next() on it is atomic under the GIL

    def drain():
        for i in nxt:
            if i >= len(items):
                return
            results[i] = _call(fn, items[i])

    helpers = [_pool(n - 1).submit(drain) for _ in range(min(n, len(items)) - 1)]
    try:
        drain()
    finally:
        for f in helpers:  # before returning or raising: they write into shared buffers
            f.exception()
    for f in helpers:
        f.result()
    return results


def pooled_products() -> bool:
    """Whether `run(..., blas_one=True)` spreads its calls over threads here."""
    return (workers() > 1 and getattr(_LOCAL, "blas", None) is not None
            and not getattr(_LOCAL, "busy", False))


# Products below this many multiply-adds stay whole (a pool hand-off costs ~20-50 us).
SPLIT_MACS = 1 << 21


def matmul(a, b, out):
    """out[...] = a @ b (NumPy, out C-contiguous in its last two axes' rows), in the pool
    when `pooled_products()`: a stack of products by shares of the stack, one product by
    shares of its rows. Every element is the same dot product as in one BLAS call."""
    xp = np if isinstance(out, np.ndarray) else None
    m, k = a.shape[-2:]
    batch = out.size // max(1, out.shape[-1] * m)
    if xp is None or not pooled_products() or batch * m * k * out.shape[-1] < SPLIT_MACS:
        return (xp or _module(out)).matmul(a, b, out=out)
    n = workers()
    if out.ndim == 3 and a.ndim == 3 and b.ndim == 3 and len(out) >= n:
        cuts = [i * len(out) // n for i in range(n + 1)]
        run(lambda i: np.matmul(a[cuts[i]:cuts[i + 1]], b[cuts[i]:cuts[i + 1]], out=out[cuts[i]:cuts[i + 1]]),
            range(n), np, blas_one=True)
    else:
        cuts = [i * m // n for i in range(n + 1)]
        run(lambda i: np.matmul(a[..., cuts[i]:cuts[i + 1], :], b, out=out[..., cuts[i]:cuts[i + 1], :]),
            range(n), np, blas_one=True)
    return out


def _module(x):
    from cvflow.arrays import get_xp

    return get_xp(x)


def spans(n, per_item=1, chunk=CHUNK):
    """[(a, b), ...] covering range(n) in runs of about chunk // per_item items: the
    pieces of a pass that applies several in-place ops while each piece is in cache."""
    step = max(1, chunk // max(1, per_item))
    return [(a, min(n, a + step)) for a in range(0, n, step)]


def piece_len(n, per_item=1, xp=np, chunk=CHUNK):
    """Length of the longest piece `map_spans` hands to fn."""
    return min(n, max(1, chunk // max(1, per_item))) if xp is np else n


def map_spans(fn, n, per_item=1, xp=np, chunk=CHUNK, blas_one=False):
    """[fn(a, b) for (a, b) in pieces], the pieces covering range(n) in order. Alone (or
    inside a pool thread) the pieces are `spans(n, per_item, chunk)`. With k threads they
    are equal, of at most chunk // per_item items, and a multiple of k in number (at most
    n: never an empty piece), taken one at a time by whichever thread is free: the
    threads finish together, also when one core runs slower for a while (this VM's
    second core does, for seconds at a time).
    (`spans`' pieces cut into one share per thread left up to a piece of imbalance:
    RAFT's GRU passes, three pieces on two threads, kept a thread idle ~20% of each.)
    A pass of fewer pieces than threads is cut only from MIN_PIECE elements per thread.
    Other array modules (CuPy) get one piece.
    blas_one: the pieces make BLAS products (see `run`)."""
    if xp is not np:
        return [fn(0, n)] if n else []
    if n <= 0:
        return []
    step = max(1, chunk // max(1, per_item))
    k = 1 if getattr(_LOCAL, "busy", False) else min(workers(), n)
    least = -(-n // step)  # pieces of at most `step` items
    if k < 2 or (least < k and n * per_item < k * MIN_PIECE):
        return [fn(a, b) for a, b in spans(n, per_item, chunk)]
    cnt = min(n, -(-least // k) * k)
    return run(lambda ab: fn(*ab), [(i * n // cnt, (i + 1) * n // cnt) for i in range(cnt)], xp, blas_one)
