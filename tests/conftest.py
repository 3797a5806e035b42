"""Shared fixtures: the `xp` array module, and access to ../shared golden cases."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
GOLDEN = SHARED / "golden"


def _have_gpu() -> bool:
    if importlib.util.find_spec("cupy") is None:
        return False
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


HAVE_GPU = _have_gpu()


def pytest_addoption(parser):
    parser.addoption("--cuda-device", action="store_true", default=False,
                     help="run the CUDA-backend tests on the GPU instead of the CPU emulator (bench/gpu_check.sh)")


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs CuPy and a CUDA device")
    config.addinivalue_line("markers", "slow: long-running (golden full-resolution cases, benches)")


def pytest_collection_modifyitems(config, items):
    if HAVE_GPU:
        return
    skip = pytest.mark.skip(reason="no CuPy/CUDA device on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _no_real_network(monkeypatch):
    """Tests never reach the internet: URLs other than 127.0.0.1 / localhost fail loudly
    (weights=None for RAFT would otherwise download torchvision's file)."""
    import urllib.parse
    import urllib.request

    real = urllib.request.urlopen

    def local_only(url, *args, **kwargs):
        host = urllib.parse.urlsplit(getattr(url, "full_url", url)).hostname
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise AssertionError(f"a test tried to reach the network: {url}")
        return real(url, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", local_only)


@pytest.fixture(params=["numpy", pytest.param("cupy", marks=pytest.mark.gpu)])
def xp(request):
    """The array module under test: NumPy always, CuPy where a GPU is present."""
    if request.param == "numpy":
        return np
    import cupy

    return cupy


def randn(rng, *shape):
    """float32 standard-normal samples of `shape` from the NumPy Generator rng."""
    return rng.standard_normal(shape).astype(np.float32)


@pytest.fixture(scope="module")
def ex():
    """The CPU emulator of the CUDA kernels (`cvflow.testing.cuda_emulator`), open for
    the whole module."""
    from cvflow.testing import cuda_emulator

    with cuda_emulator() as e:
        yield e


def need_shared():
    """Skip the calling test when ../shared (golden data) is absent."""
    if not GOLDEN.is_dir():
        pytest.skip(f"golden data not found at {SHARED} (../shared beside the project)")


def golden_cases(family: str) -> list[dict]:
    """Cases of ../shared/golden/<family>/index_<family>.json, or [] when absent."""
    index = GOLDEN / family / f"index_{family}.json"
    if not index.is_file():
        return []
    return json.loads(index.read_text())


def golden_case(family: str, name: str) -> dict:
    """The golden case `name` of `family`; skips the test when ../shared or the case is absent."""
    need_shared()
    for case in golden_cases(family):
        if case["name"] == name:
            return case
    pytest.skip(f"golden case {name} not in index_{family}.json")


def case_ids(family: str):
    cases = golden_cases(family)
    return cases or [pytest.param(None, marks=pytest.mark.skip(reason=f"no golden data at {GOLDEN}"))]


def load_frames(case: dict):
    """The case's two frames as BGR uint8 (cv2.imread), cropped as the case says."""
    import cv2

    frames = []
    for key in ("frame0", "frame1"):
        img = cv2.imread(str(SHARED / case[key]), cv2.IMREAD_COLOR)
        if "crop" in case:
            y0, y1, x0, x1 = case["crop"]
            img = img[y0:y1, x0:x1]
        frames.append(np.ascontiguousarray(img))
    return frames


def case_weights(family: str, case: dict):
    """Weights for a case: a checkpoint path, or synth_weights(manifest) for `synthetic:<seed>`."""
    w = case["weights"]
    if not w.startswith("synthetic:"):
        return str(SHARED / w)
    sys.path.insert(0, str(SHARED / "tools"))
    try:
        from synth_weights import synth_weights
    finally:
        sys.path.pop(0)
    manifest = json.loads((GOLDEN / family / f"manifest_{case['model']}.json").read_text())
    return synth_weights(manifest)


def golden_flow(family: str, case: dict) -> np.ndarray:
    return np.load(GOLDEN / family / case["output"])


def assert_parity(flow: np.ndarray, golden: np.ndarray, mean_tol=1e-3, max_tol=5e-2):
    """The project's parity bar: mean |d| <= 1e-3 px and max |d| <= 5e-2 px."""
    assert flow.shape == golden.shape, (flow.shape, golden.shape)
    diff = np.abs(flow.astype(np.float64) - golden)
    assert np.isfinite(diff).all(), "non-finite flow"
    assert diff.mean() <= mean_tol and diff.max() <= max_tol, (
        f"mean |d| {diff.mean():.3g} (<= {mean_tol}), max |d| {diff.max():.3g} (<= {max_tol})")


# -- a stand-in `cupy` module (NumPy arrays), for the CuPy executor's wiring without a GPU --
class _FakeDevice:
    def __init__(self, i):
        self.id = i

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def synchronize(self):
        pass


class FakeCupyPool:
    freed = 0

    def free_all_blocks(self):
        FakeCupyPool.freed += 1


def fake_cupy(log=None):
    """A module to put in sys.modules["cupy"]: NumPy's array functions, one device, memory
    pools that count frees, the current stream, and RawModule functions that run the
    emulator's build of the same kernels/*.cu source (launches appended to `log`)."""
    import types

    from cvflow.backends.cuda import emulator

    log = [] if log is None else log
    cp = types.ModuleType("cupy")
    for name in ("asarray", "ascontiguousarray", "empty", "zeros", "matmul", "ndarray", "float32",
                 "broadcast_to"):
        setattr(cp, name, getattr(np, name))
    cp.asnumpy = np.asarray
    cp.cuda = types.SimpleNamespace(Device=_FakeDevice, runtime=types.SimpleNamespace(getDeviceCount=lambda: 1),
                                    get_current_stream=lambda: types.SimpleNamespace(ptr=77))
    cp.get_default_memory_pool = cp.get_default_pinned_memory_pool = FakeCupyPool
    stems = {emulator.kernel_source(p.stem): p.stem for p in emulator.kernel_dir().glob("*.cu")}

    class RawModule:
        def __init__(self, code, options=()):
            self.stem = stems[code]  # the module is built from a kernels/*.cu source, verbatim (after dtype.h)
            log.append(("module", self.stem, tuple(options)))

        def get_function(self, name):
            def launch(grid, block, args, shared_mem=0):
                log.append(("launch", f"{self.stem}:{name}", grid, block, shared_mem))
                emulator.library(self.stem).launch(name, grid, block, args)
            return launch

    cp.RawModule = RawModule
    return cp
