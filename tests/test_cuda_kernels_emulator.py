"""The executors' mechanics: the emulator's build cache, its argument checks (which stand
for what a GPU launch needs), the cuda_emulator() hook and get_executor()'s errors."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cvflow.backends.cuda import emulator, executor
from cvflow.errors import DeviceError
from cvflow.testing import cuda_emulator

ROOT = Path(__file__).resolve().parents[1]


def test_every_kernel_source_has_kernels_and_builds():
    for cu in sorted(emulator.kernel_dir().glob("*.cu")):
        lib = emulator.library(cu.stem)
        assert lib.kernels, cu.name
        for name in lib.kernels:
            assert getattr(lib.dll, f"cvf_launch_{name}")


def test_signature_parsing():
    src = 'extern "C" __global__ void k(const float* __restrict__ a, int n, float s, double* q) {}'
    assert emulator.parse_kernels(src) == {"k": [("float", True), ("int", False), ("float", False), ("double", True)]}


def test_cached_library_is_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("CVFLOW_EMU_CACHE", str(tmp_path))
    first, _ = emulator.build("act")
    stamp = first.stat().st_mtime_ns
    again, _ = emulator.build("act")
    assert again == first and again.stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary left behind


def test_missing_compiler_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("CVFLOW_EMU_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-g++"))
    with pytest.raises(DeviceError, match=r"the CUDA emulator builds kernels with g\+\+ \(C\+\+20\); none was found"):
        emulator.build("act")


def test_concurrent_builds_are_safe(tmp_path):
    code = ("from cvflow.backends.cuda import emulator; import ctypes; "
            "p, _ = emulator.build('pool'); ctypes.CDLL(str(p)); print(p)")
    env = {**os.environ, "CVFLOW_EMU_CACHE": str(tmp_path), "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0] and outs[0] == outs[1]
    assert [p.name for p in tmp_path.iterdir()] == [Path(outs[0]).name]


def test_launch_arguments_are_checked():
    with cuda_emulator() as ex:
        x = ex.zeros(8)
        args = (x, x, np.int32(8), np.int32(8), np.int32(0), np.int32(1), np.float32(0.1))
        ex.launch("act:bias_act", (1,), (8,), args)
        with pytest.raises(DeviceError, match="act:bias_act argument 1 is a host array: kernels take device arrays"):
            ex.launch("act:bias_act", (1,), (8,), (x, np.zeros(8, np.float32)) + args[2:])
        with pytest.raises(DeviceError, match="act:bias_act argument 0 must be a float array, got DeviceArray float64"):
            ex.launch("act:bias_act", (1,), (8,), (x.astype(np.float64),) + args[1:])
        with pytest.raises(DeviceError, match="act:bias_act argument 0 must be C-contiguous"):
            ex.launch("act:bias_act", (1,), (8,), (ex.zeros(16)[::2],) + args[1:])
        with pytest.raises(DeviceError, match=r"argument 2 must be a NumPy int scalar \(int32\), got int"):
            ex.launch("act:bias_act", (1,), (8,), args[:2] + (8,) + args[3:])
        with pytest.raises(DeviceError, match="act:bias_act takes 7 arguments, got 6"):
            ex.launch("act:bias_act", (1,), (8,), args[:6])
        with pytest.raises(DeviceError, match="act.cu has no kernel 'gelu'"):
            ex.launch("act:gelu", (1,), (8,), args)
        with pytest.raises(DeviceError, match="no kernel source nope.cu"):
            ex.launch("nope:k", (1,), (8,), args)
        with pytest.raises(DeviceError, match='kernel names are "file:function", got \'bias_act\''):
            ex.launch("bias_act", (1,), (8,), args)
        with pytest.raises(DeviceError, match="without shared memory"):
            ex.launch("act:bias_act", (1,), (8,), args, shared_mem=1024)
        with pytest.raises(DeviceError, match=r"launch dimensions must be 1 to 3 positive ints, got \(0,\)"):
            ex.launch("act:bias_act", (0,), (8,), args)


def test_grid_and_block_cover_every_thread():
    # bias_act indexes by the x dimensions only: with grid (2, 3) and block (4, 5), each of
    # the 8 x indices runs once per (y) block and thread: 3 * 5 times.
    with cuda_emulator() as ex:
        x = ex.zeros(20)
        ex.launch("act:bias_act", (2, 3), (4, 5), (x, ex.asarray(np.ones(1)), np.int32(x.size), np.int32(1),
                                                  np.int32(1), np.int32(0), np.float32(0)))
        np.testing.assert_array_equal(x, [15] * 8 + [0] * 12)


@pytest.mark.parametrize("threads", [2, 3, 7])
def test_block_runs_on_os_threads_equal_the_serial_emulation(monkeypatch, threads):
    from cvflow.backends.cuda import k_conv

    rng = np.random.default_rng(threads)
    x, w = rng.standard_normal((2, 13, 11, 5)).astype(np.float32), rng.standard_normal((4, 5, 3, 3)).astype(np.float32)
    with cuda_emulator() as ex:
        layer = k_conv.prepare_conv(ex, w)
        monkeypatch.setattr(emulator, "_THREADS", 1)
        serial = k_conv.conv2d(ex, x, layer, 2, 1, act="relu")
        monkeypatch.setattr(emulator, "_THREADS", threads)
        monkeypatch.setattr(emulator, "_PARALLEL_FROM", 1)
        np.testing.assert_array_equal(k_conv.conv2d(ex, x, layer, 2, 1, act="relu"), serial)


def test_cuda_emulator_context():
    with cuda_emulator() as ex:
        assert executor.get_executor() is ex and ex.name == "emulator" and ex.xp.float32 is np.float32
        with cuda_emulator() as inner:
            assert inner is ex
        assert executor.get_executor() is ex
        a = ex.asarray([[1, 2]])
        host = ex.to_host(a)  # a copy: device memory is not the host's
        assert a.dtype == np.float32 and type(host) is np.ndarray and not np.shares_memory(host, a)
        np.testing.assert_array_equal(ex.matmul(a, a.T), [[5]])
    assert executor._EMULATOR["executor"] is None


def test_get_executor_without_a_device(monkeypatch):
    try:
        import cupy

        present = cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no CuPy, or no driver/device
        present = False
    if present:
        pytest.skip("a CUDA device is present")
    monkeypatch.setattr(executor, "_CUPY", {})
    with pytest.raises(DeviceError, match="device='cuda' needs"):
        executor.get_executor()


def test_launch_1d_rejects_int_overflow():
    with cuda_emulator() as ex, pytest.raises(DeviceError, match="exceed a kernel's int index range"):
        executor.launch_1d(ex, "act:add_relu", 2**31, None)
