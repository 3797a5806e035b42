"""Large NumPy arrays reused from one call to the next instead of freshly allocated.

A model call allocates the same large activations every time. Allocations of that
size come straight from the OS (mmap) and are returned to it on free, so every call
pays a page fault per 4 KiB of every activation; on virtual machines, where a fresh
page also faults on the host, that costs as much as the convolutions filling them
(FlowNet2 at 448x1024 on a 2-core VM: about 0.9 s of 4.2 s).

While an `Arena` is active in a thread (`with arena.active():`), `empty` and
`concatenate` hand out buffers the arena already holds whenever one is idle. A buffer
is idle when nothing but the arena refers to it: every NumPy view keeps the array that
owns its memory alive (`ndarray.base`), so an array still in use anywhere - a skip
connection, a result the caller kept - is never handed out twice. Buffers the arena
did not hand out during an activation are dropped when it ends, and `release` drops
them all. Other array modules (CuPy has its own pool) and small arrays bypass it.
The CPU backend (`cvflow.backends.cpu`) owns one arena per created object and activates
it around each forward pass, for models registered with `reuse_bytes`, the size
from which arrays are kept: 1 MiB for the FlowNet2 family, 32 MiB for RAFT (only its
correlation volumes and half-resolution features: idle buffers are held until reused,
and with RAFT's many sizes of smaller activations that raised the peak by 50% for no
gain).
"""
from __future__ import annotations

import sys
import threading
from contextlib import contextmanager

import numpy as np

MIN_BYTES = 1 << 20  # default floor: below this, malloc keeps and reuses the memory itself
_SLACK = 1.25  # a buffer serves requests down to 1/_SLACK of its size
_LOCAL = threading.local()


class Arena:
    """A set of large byte buffers, handed out as arrays while idle."""

    def __init__(self, min_bytes: int = MIN_BYTES):
        self.min_bytes = min_bytes  # smaller arrays are allocated as usual
        self._bufs: list[np.ndarray] = []
        self._taken: set[int] = set()  # ids of buffers handed out in this activation
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        return sum(b.nbytes for b in self._bufs)

    def empty(self, shape, dtype) -> np.ndarray:
        """An array on an idle buffer of at least its size (the smallest that fits), or on a
        new one. The view is made under the lock: two threads sharing the arena never
        both see a buffer idle."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        with self._lock:
            best = None
            for i in range(len(self._bufs)):
                # References while idle: the list's, and getrefcount's argument.
                size = self._bufs[i].size
                if nbytes <= size <= nbytes * _SLACK and sys.getrefcount(self._bufs[i]) == 2 \
                        and (best is None or size < self._bufs[best].size):
                    best = i
            if best is None:
                self._bufs.append(np.empty(nbytes, np.uint8))
                best = len(self._bufs) - 1
            self._taken.add(id(self._bufs[best]))
            return self._bufs[best][:nbytes].view(dtype).reshape(shape)

    def release(self) -> None:
        """Drop every buffer (arrays still in use keep their own memory alive)."""
        with self._lock:
            self._bufs.clear()
            self._taken.clear()

    @contextmanager
    def active(self):
        """Serve `empty`/`concatenate` in this thread from the arena (nested: the outer one)."""
        if getattr(_LOCAL, "arena", None) is not None:
            yield self
            return
        _LOCAL.arena = self
        try:
            yield self
        finally:
            _LOCAL.arena = None
            with self._lock:
                self._bufs = [b for b in self._bufs if id(b) in self._taken]
                self._taken.clear()


def empty(xp, shape, dtype):
    """xp.empty(shape, dtype), from the active arena when it is NumPy and large."""
    arena = getattr(_LOCAL, "arena", None)
    if arena is None or xp is not np or \
            int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize < arena.min_bytes:
        return xp.empty(shape, dtype)
    return arena.empty(shape, dtype)


def concatenate(parts, axis=-1):
    """xp.concatenate(parts, axis) into an `empty` array (all parts of one dtype and module)."""
    from cvflow.arrays import get_xp

    xp = get_xp(parts[0])
    shape = list(parts[0].shape)
    ax = axis % len(shape)
    shape[ax] = sum(p.shape[ax] for p in parts)
    out = empty(xp, tuple(shape), parts[0].dtype)
    return xp.concatenate(parts, axis=ax, out=out)
