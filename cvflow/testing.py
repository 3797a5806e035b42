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


def dispatch_profile(name, height, width, options=None, dry=True, weights=None):
    """One `calc` of model `name` on a (height, width) frame pair on the emulator, counted:
    kernel launches, array ops outside the executor, products and FLOPs, host<->device
    copies, syncs, allocations and peak live device bytes, per phase and per update. dry:
    kernels and products skip their arithmetic (same counts, seconds at 4K). Returns a
    :class:`cvflow.profiling.Profile`; see ``bench/gpu_profile.py``."""
    from cvflow.profiling import profile

    return profile(name, height, width, options, dry=dry, weights=weights)
