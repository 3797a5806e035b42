"""The CUDA backend against the authors' outputs (../shared/golden), every model.

Every case runs `cvflow.create(name, weights=..., device="cuda")` on the CPU emulator of
the kernels (`cvflow.testing.cuda_emulator()`); with `pytest --cuda-device` (as
`bench/gpu_check.sh` runs it) on the real GPU instead. Same bar as the CPU backend
(mean <= 1e-3 px, max <= 5e-2 px).
The full-resolution RAFT-small and NeuFlow v2 cases (FlyingChairs 384x512 and Sintel 436x1024, 30 s to
minutes each on the emulator) are `slow`; every model has a case that runs by default.
"""
from __future__ import annotations

import contextlib

import numpy as np
import pytest
from conftest import assert_parity, case_weights, golden_cases, golden_flow, load_frames, need_shared

import cvflow
from cvflow.backends.cuda.backend import CudaBackend
from cvflow.testing import cuda_emulator

# Models with no golden case of their own: (model, the case whose frames and weights it takes).
# The aliases are the same architectures with the same checkpoint layout.
ALIASES = {"flownetc": "flownet2-c_synth11_sintel_crop", "flownets": "flownet2-s_synth12_sintel_crop"}
SLOW = ("raft-small_chairs_", "raft-small_sintel_0016_", "neuflow2_synth41_chairs", "neuflow2_synth41_sintel_full")


def _executor(request):
    """The emulator, or the real GPU executor under `pytest --cuda-device` (gpu_check.sh)."""
    if request.config.getoption("--cuda-device", default=False):
        return contextlib.nullcontext()
    return cuda_emulator()


def _params(family):
    cases = golden_cases(family)
    if not cases:
        return [pytest.param(None, marks=pytest.mark.skip(reason="no golden data in ../shared"))]
    return [pytest.param(c, id=c["name"], marks=[pytest.mark.slow] if c["name"].startswith(SLOW) else [])
            for c in cases]


def _run(request, family, case, model=None):
    need_shared()
    frame0, frame1 = load_frames(case)
    options = {"iters": case["iters"]} if "iters" in case else {}
    options.update({k: case[k] for k in ("iters_s16", "iters_s8") if k in case})
    with _executor(request):
        of = cvflow.create(model or case["model"], weights=case_weights(family, case), device="cuda", **options)
        assert isinstance(of._backend, CudaBackend) and of.device == "cuda"
        flow = of.calc(frame0, frame1, None)
    assert isinstance(flow, np.ndarray) and flow.dtype == np.float32
    return flow


@pytest.mark.parametrize("case", _params("raft"))
def test_raft_golden_on_cuda_backend(request, case):
    assert_parity(_run(request, "raft", case), golden_flow("raft", case))


@pytest.mark.parametrize("case", _params("flownet2"))
def test_flownet2_golden_on_cuda_backend(request, case):
    assert_parity(_run(request, "flownet2", case), golden_flow("flownet2", case))


@pytest.mark.parametrize("case", _params("gmflow"))
def test_gmflow_golden_on_cuda_backend(request, case):
    assert_parity(_run(request, "gmflow", case), golden_flow("gmflow", case))


@pytest.mark.parametrize("case", _params("neuflow2"))
def test_neuflow2_golden_on_cuda_backend(request, case):
    assert_parity(_run(request, "neuflow2", case), golden_flow("neuflow2", case))


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_architecture_aliases_on_cuda_backend(request, alias):
    need_shared()
    case = next((c for c in golden_cases("flownet2") if c["name"] == ALIASES[alias]), None)
    if case is None:
        pytest.skip(f"golden case {ALIASES[alias]} not in ../shared")
    assert_parity(_run(request, "flownet2", case, model=alias), golden_flow("flownet2", case))


def test_flownet2_cs_matches_cpu_backend(request):
    """FlowNet2-CS has no golden output: the CUDA backend against the CPU backend (itself
    held to the golden bar by the other FlowNet2 cases), with FlowNet2-CSS's synthetic
    weights minus its second FlowNetS."""
    need_shared()
    case = next((c for c in golden_cases("flownet2") if c["model"] == "flownet2-css"), None)
    if case is None:
        pytest.skip("no FlowNet2-CSS golden case in ../shared")
    weights = {k: v for k, v in case_weights("flownet2", case).items() if not k.startswith("flownets_2.")}
    frame0, frame1 = load_frames(case)
    want = cvflow.create("flownet2-cs", weights=weights, device="cpu").calc(frame0, frame1, None)
    with _executor(request):
        got = cvflow.create("flownet2-cs", weights=weights, device="cuda").calc(frame0, frame1, None)
    assert_parity(got, want)


def test_on_the_fly_correlation_on_cuda_backend(request):
    """RAFT-small with a correlation budget of 1 byte: the on-the-fly lookup kernels."""
    need_shared()
    case = next((c for c in golden_cases("raft") if c["name"] == "raft-small_sintel_crop_0018_it4"), None)
    if case is None:
        pytest.skip("golden case raft-small_sintel_crop_0018_it4 not in ../shared")
    frame0, frame1 = load_frames(case)
    with _executor(request):
        of = cvflow.create("raft-small", weights=case_weights("raft", case), device="cuda", iters=case["iters"],
                           corr_budget=1)
        flow = of.calc(frame0, frame1, None)
    assert_parity(flow, golden_flow("raft", case))


def test_cuda_backend_never_writes_the_weights_and_collects_garbage(request):
    """Prepared layers live in the backend (the placed weights keep their keys only), and
    collectGarbage reaches the executor; GMFlow's bidirectional pass runs there too."""
    need_shared()
    case = next((c for c in golden_cases("gmflow") if c["model"] == "gmflow"), None)
    if case is None:
        pytest.skip("no GMFlow golden case in ../shared")
    frame0, frame1 = (f[:48, :80] for f in load_frames(case))
    weights = case_weights("gmflow", case)
    with _executor(request):
        of = cvflow.create("gmflow", weights=weights, device="cuda")
        before = of._backend.prepared_count
        fw, bw = of.calcBidirectional(frame0, frame1)
        assert of._backend.prepared_count == before > 0
        of.collectGarbage()
        again = of.calc(frame0, frame1, None)
    cpu = cvflow.create("gmflow", weights=weights, device="cpu")
    want_fw, want_bw = cpu.calcBidirectional(frame0, frame1)
    np.testing.assert_allclose(fw, want_fw, atol=1e-3)
    np.testing.assert_allclose(bw, want_bw, atol=1e-3)
    np.testing.assert_array_equal(again, fw)
    assert not _private_keys(of._params)


def _private_keys(tree):
    """Keys starting with "_" anywhere in a nested weight dict (derived entries)."""
    out = [k for k in tree if k.startswith("_")]
    return out + [k for v in tree.values() if isinstance(v, dict) for k in _private_keys(v)]
