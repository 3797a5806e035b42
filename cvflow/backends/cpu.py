"""The CPU backend: the NumPy ops of `cvflow.ops` (BLAS products, cache-sized threaded
passes), with an activation arena as its workspace.

Every op is `Backend`'s generic one, whose NumPy paths are the fast ones; what is the
CPU's own is memory: large activations come from the object's `Arena` (models
registered with `reuse_bytes`), and `release` drops it and the calling thread's
convolution scratch; and threads: each forward pass runs with BLAS, cvflow's pool and
OpenCV bounded to the object's `threads` (`cvflow.backends.threads`).
"""
from __future__ import annotations

from contextlib import ExitStack, contextmanager

import numpy as np

from cvflow.backends import threads as thread_limits
from cvflow.backends.base import Backend, _Pass
from cvflow.ops import arena as arena_ops
from cvflow.ops import parallel
from cvflow.ops import conv as conv_ops


# Most bytes an object's arena holds: above every model's need at up to 1080p (0.6 GB),
# below what RAFT's encoders and update loop would keep at 4K (1.8 GB: see cvflow.ops.arena).
ARENA_MAX_BYTES = 1 << 30


class CPUBackend(Backend):
    """NumPy on the host. reuse_bytes: keep arrays of at least this size between calls
    in an arena (0: none; see `cvflow.ops.arena`). threads: threads of each forward pass
    (None: `cvflow.ops.parallel.default_threads()`, the cores this process may use)."""

    name = "cpu"
    xp = np
    batch_passes = False  # RAFT's update loop at batch 2: 2.09x batch 1 (440x1024)

    def __init__(self, reuse_bytes: int = 0, threads: int | None = None):
        super().__init__()
        self.arena = arena_ops.Arena(reuse_bytes, ARENA_MAX_BYTES) if reuse_bytes else None
        self.threads = threads

    def asarray(self, host, dtype=np.float32):
        return np.ascontiguousarray(host, dtype=dtype)

    def workspace(self):
        return _Pass(self, self._scope())

    @contextmanager
    def _scope(self):
        with ExitStack() as stack:
            stack.enter_context(thread_limits.limited(self.threads or parallel.default_threads()))
            if self.arena is not None:
                stack.enter_context(self.arena.active())
            yield

    def detach(self, out):
        """A result of a pass that owns its memory (not an arena buffer or a view of one)."""
        return out if self.arena is None else out.copy()

    def release(self) -> None:
        if self.arena is not None:
            self.arena.release()
        conv_ops.release_scratch()

    def empty(self, shape, dtype=np.float32):
        return arena_ops.empty(np, shape, dtype)

    def concat(self, parts, axis=-1):
        return arena_ops.concatenate(parts, axis)
