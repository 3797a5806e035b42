"""Timing of bench/gpu_bench.py's rows: the median wall time of a call, and the device's
own time of a pass between two CUDA events, queued behind a spin kernel so that the host
is ahead (CuPy's events and spin kernel here; PyTorch's in gpu_torch.py)."""
from __future__ import annotations

import statistics
import time

import numpy as np

SPIN_CYCLES = 400_000_000  # ~0.2 s of one GPU thread: the host queues a whole pass behind it


def median_ms(fn, repeat):
    fn()
    fn()  # warm-up: kernels compiled, pools filled, cuBLAS/cuDNN handles and plans made
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def gpu_ms(pass_fn, spin, event, repeat):
    """Median device ms of pass_fn (device-resident inputs and outputs) between two events,
    queued behind a spin kernel; also whether the host ever fell behind the device (then
    the figure includes the device's idle gaps)."""
    times, behind = [], False
    for _ in range(repeat):
        spin()
        spun, start, end = event(False), event(True), event(True)
        spun.record()
        start.record()
        pass_fn()
        end.record()
        behind |= spun.query()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times), behind


def cupy_timing():
    import cupy

    kernel = cupy.RawKernel(r'''extern "C" __global__ void spin(long long cycles) {
        long long t0 = clock64(); while (clock64() - t0 < cycles) {} }''', "spin")

    class Event:
        def __init__(self, timing):
            self.e = cupy.cuda.Event(disable_timing=not timing)

        def record(self):
            self.e.record()

        def query(self):
            return self.e.done

        def synchronize(self):
            self.e.synchronize()

        def elapsed_time(self, end):
            return cupy.cuda.get_elapsed_time(self.e, end.e)

    return (lambda: kernel((1,), (1,), (np.int64(SPIN_CYCLES),))), Event
