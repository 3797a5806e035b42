"""Test hooks.

:func:`cuda_emulator` runs cvflow's CUDA backend without a GPU: inside it,
``cvflow.backends.cuda.executor.get_executor()`` returns the CPU emulator, which runs the
same ``kernels/*.cu`` sources compiled by g++ (one CUDA thread after another; large
grids in runs of whole blocks on ``$CVFLOW_EMU_THREADS`` OS threads) on NumPy arrays, and NumPy matrix products in place of cuBLAS. So
``cvflow.create(name, weights=..., device="cuda")`` builds the CUDA backend on the
emulator, and ``calc`` returns NumPy arrays, as on a GPU. For tests only: the emulator
is slow and is never a user-facing device. It needs g++ (C++20); the kernel libraries
are built on first use and cached (``$CVFLOW_EMU_CACHE``, default
``<tmp>/cvflow-emu-<uid>``).
"""
from __future__ import annotations

import contextlib


@contextlib.contextmanager
def cuda_emulator():
    """Context manager: within it the CUDA backend runs on the CPU emulator.

    >>> import cvflow, cvflow.testing
    >>> with cvflow.testing.cuda_emulator():                     # doctest: +SKIP
    ...     of = cvflow.create("raft-small", weights=w, device="cuda")
    ...     flow = of.calc(prev, next, None)                    # NumPy (H, W, 2) float32

    Yields the :class:`~cvflow.backends.cuda.executor.EmulatorExecutor`. Contexts nest;
    the emulator is process-wide while any is open (the backend's threads see it too).
    """
    from cvflow.backends.cuda import executor

    ex = executor.push_emulator()
    try:
        yield ex
    finally:
        executor.pop_emulator()
