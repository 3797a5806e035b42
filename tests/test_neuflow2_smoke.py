"""NeuFlow v2 through what every model offers: calcBidirectional with occlusion, video,
extract, eval, options (synthetic weights from ../shared; small frames)."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import SHARED, case_weights, golden_cases, load_frames, need_shared
from test_extraction import make_clip

import cvflow
from cvflow.errors import CvflowTypeError, InputError


@pytest.fixture(scope="module")
def weights():
    need_shared()
    cases = golden_cases("neuflow2")
    if not cases:
        pytest.skip("no NeuFlow v2 golden data in ../shared")
    return case_weights("neuflow2", cases[0])


@pytest.fixture(scope="module")
def algo(weights):
    return cvflow.create("neuflow2", weights=weights, device="cpu")


def test_options_and_identity(algo, weights):
    assert algo.options == {"iters_s16": 1, "iters_s8": 8, "corr_budget": 1 << 30}
    assert algo.getDefaultName() == "DenseOpticalFlow.cvflow.neuflow2"
    algo2 = cvflow.create("neuflow2", weights=weights, device="cpu", iters_s8=2)
    assert algo2.getIters_s8() == 2
    with pytest.raises(InputError, match="model 'neuflow2' has no option 'iters'; "
                                         "its options: corr_budget, iters_s16, iters_s8"):
        cvflow.create("neuflow2", weights=weights, device="cpu", iters=3)
    with pytest.raises(CvflowTypeError, match="option 'iters_s8' must be an int, got 2.5"):
        algo2.setIters_s8(2.5)


def test_calc_bidirectional_with_occlusion_and_small_frames(algo):
    case = golden_cases("neuflow2")[0]
    f0, f1 = (np.ascontiguousarray(f[:40, :50]) for f in load_frames(case))  # padded to 48x64
    fw, bw, occ0, occ1 = algo.calcBidirectional(f0, f1, occlusion=True)
    assert fw.shape == bw.shape == (40, 50, 2) and occ0.shape == occ1.shape == (40, 50)
    assert occ0.dtype == bool
    np.testing.assert_allclose(fw, algo.calc(f0, f1), atol=1e-4)
    np.testing.assert_allclose(bw, algo.calc(f1, f0), atol=1e-4)
    tiny = algo.calc(f0[:20, :25], f1[:20, :25])  # below min_size: padded to 32 and cropped back
    assert tiny.shape == (20, 25, 2) and np.isfinite(tiny).all()
    gray = algo.calc(f0[..., 1], f1[..., 1])
    assert gray.shape == (40, 50, 2)
    algo.setCorr_budget(1)  # every lookup computes its own dot products: the same flow
    try:
        np.testing.assert_allclose(algo.calc(f0, f1), fw, atol=1e-3)
    finally:
        algo.setCorr_budget(1 << 30)


def test_video_and_extract(algo, weights, tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    make_clip(clips / "a.mp4", n=3, h=48, w=64)
    from cvflow.video import run_video

    summary = run_video(clips / "a.mp4", algo, tmp_path / "out", npz=True, mp4=False, progress=False)
    with np.load(tmp_path / "out" / "flow.npz") as z:
        assert z["flow"].shape == (2, 48, 64, 2) and np.isfinite(z["flow"]).all()
    assert summary
    res = cvflow.extract(clips, tmp_path / "ex", "neuflow2", weights=weights, device="cpu", save="both",
                         progress=False)
    assert res["computed"] == 1


def test_eval_on_one_chairs_pair(algo):
    from cvflow.evaluate import evaluate, find_pairs

    root = SHARED / "data" / "flyingchairs"
    if not root.is_dir():
        pytest.skip(f"no FlyingChairs pairs at {root}")
    res = evaluate(algo, find_pairs(root, "chairs", limit=1), progress=False)
    assert res["pairs"] == 1 and np.isfinite(res["epe"])  # synthetic weights: the value means nothing


def test_cuda_backend_bidirectional_matches_the_cpu(algo, weights):
    """forward_both on the CUDA backend (emulator): the same flows as the CPU backend."""
    from cvflow.testing import cuda_emulator

    case = golden_cases("neuflow2")[0]
    f0, f1 = (np.ascontiguousarray(f[:48, :64]) for f in load_frames(case))
    with cuda_emulator():
        gpu = cvflow.create("neuflow2", weights=weights, device="cuda")
        fw, bw = gpu.calcBidirectional(f0, f1)
    np.testing.assert_allclose(fw, algo.calc(f0, f1), atol=1e-3)
    np.testing.assert_allclose(bw, algo.calc(f1, f0), atol=1e-3)


def test_folded_layers_live_in_the_backend(algo, weights):
    """conv + BatchNorm folding writes nothing into the placed weights (or the caller's)."""
    def flat(d, prefix=""):
        for k, v in d.items():
            yield from flat(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"]

    assert set(flat(algo._params)) == set(weights)
    kinds = {kind for (_, kind) in algo._backend._prepared}
    assert "conv_bn1e-05" in kinds  # the folded layers, derived once by create()
