"""The CuPy executor's wiring, without a GPU: a stand-in `cupy` module (NumPy arrays;
RawModule functions that run the emulator's build of the same source) lets the CuPy
adapter run the kernel wrappers. Checks that it loads each .cu once per device, passes
grid, block and arguments through unchanged, and gives the emulator's numbers."""
from __future__ import annotations

import sys

import numpy as np
import pytest
from conftest import FakeCupyPool as _Pool
from conftest import fake_cupy as _fake_cupy

from cvflow.backends.cuda import executor, k_conv, k_corr, k_warp
from cvflow.testing import cuda_emulator


@pytest.fixture()
def fake(monkeypatch):
    log = []
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(log))
    monkeypatch.setattr(executor, "_CUPY", {})
    return log


def _wrappers(ex, rng):
    x = ex.asarray(rng.standard_normal((1, 9, 10, 4)).astype(np.float32))  # kernels take device arrays
    w, b = rng.standard_normal((5, 4, 3, 3)).astype(np.float32), rng.standard_normal(5).astype(np.float32)
    f = ex.asarray(rng.standard_normal((1, 8, 9, 6)).astype(np.float32))
    coords = ex.asarray(rng.uniform(-3, 12, (1, 8, 9, 2)).astype(np.float32))
    flow = ex.asarray(rng.standard_normal((1, 9, 10, 2)).astype(np.float32) * 3)
    return [k_conv.conv2d(ex, x, k_conv.prepare_conv(ex, w, b), 2, 1, act="relu"),
            k_corr.corr_lookup(ex, k_corr.corr_pyramid(ex, f, f, 3), coords, 3),
            k_warp.resample2d(ex, x, flow)]


def test_cupy_adapter_runs_the_wrappers_as_the_emulator(fake):
    ex = executor.get_executor(0)
    assert isinstance(ex, executor.CupyExecutor) and executor.get_executor(0) is ex
    got = [ex.to_host(a) for a in _wrappers(ex, np.random.default_rng(0))]
    _wrappers(ex, np.random.default_rng(0))  # again: modules are not rebuilt
    with cuda_emulator() as emu:
        want = _wrappers(emu, np.random.default_rng(0))
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    modules = [e for e in fake if e[0] == "module"]
    assert sorted(m[1] for m in modules) == ["act", "corr_lookup", "im2col", "pool", "sample", "strided"]
    assert all(m[2] == ("--std=c++17",) for m in modules)
    launches = [e for e in fake if e[0] == "launch"]
    assert all(len(g) == 1 and b == (executor.BLOCK,) and s == 0 for _, _, g, b, s in launches)
    ex.free_all()
    assert _Pool.freed >= 2


def test_cupy_adapter_errors(fake, monkeypatch):
    from cvflow.errors import DeviceError

    with pytest.raises(DeviceError, match=r"CUDA device 3 does not exist \(1 device\(s\) found\)"):
        executor.get_executor(3)
    monkeypatch.setattr(sys.modules["cupy"].cuda.runtime, "getDeviceCount",
                        lambda: (_ for _ in ()).throw(RuntimeError("no driver")))
    with pytest.raises(DeviceError, match=r"needs a CUDA device; CuPy found none \(no driver\)"):
        executor.get_executor(0)
    monkeypatch.setitem(sys.modules, "cupy", None)  # import fails
    with pytest.raises(DeviceError, match="needs CuPy"):
        executor.get_executor(0)
