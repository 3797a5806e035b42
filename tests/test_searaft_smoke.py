"""SEA-RAFT through what every model has: calcBidirectional (+ occlusion), video, extract
and eval, on small frames with the synthetic S weights; the CUDA backend's bidirectional
pass on the emulator."""
from __future__ import annotations

import numpy as np
import pytest

import cvflow
from cvflow.evaluate import evaluate, find_pairs
from cvflow.video import run_video
from conftest import SHARED, golden_cases, need_shared
from test_searaft_golden import synthetic
from test_video import make_video


@pytest.fixture(scope="module")
def of():
    need_shared()
    if not golden_cases("searaft"):
        pytest.skip("no SEA-RAFT golden data in ../shared")
    return cvflow.create("searaft-s", weights=synthetic("searaft-s"), device="cpu")


def _pair():
    import cv2

    frames = [cv2.imread(str(SHARED / "data" / "sintel_market_2" / f"frame_00{i}.png")) for i in (16, 17)]
    return [np.ascontiguousarray(f[100:220, 300:460]) for f in frames]  # 120x160: padded to 128 (min_size)


def test_calc_bidirectional_equals_two_calcs(of):
    f0, f1 = _pair()
    fw, bw, occ0, occ1 = of.calcBidirectional(f0, f1, occlusion=True)
    info_fw = of.getInfo()
    np.testing.assert_allclose(fw, of.calc(f0, f1), atol=1e-4)
    np.testing.assert_allclose(info_fw, of.getInfo(), atol=1e-4)
    np.testing.assert_allclose(bw, of.calc(f1, f0), atol=1e-4)
    assert occ0.shape == occ1.shape == f0.shape[:2] and occ0.dtype == bool


def test_cuda_backend_bidirectional_on_emulator(of):
    from cvflow.testing import cuda_emulator

    f0, f1 = _pair()
    want = of.calcBidirectional(f0, f1)
    with cuda_emulator():
        gpu = cvflow.create("searaft-s", weights=synthetic("searaft-s"), device="cuda")
        got = gpu.calcBidirectional(f0, f1)
        unc = gpu.getUncertainty()
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-3)
    assert isinstance(unc, np.ndarray) and unc.shape == f0.shape[:2]


def test_video_and_extract(of, tmp_path):
    (tmp_path / "clips").mkdir()
    clip = make_video(tmp_path / "clips" / "a.mp4", n=3)
    res = run_video(clip, of, tmp_path / "out", npz=True, mp4=False, progress=False)
    assert res["pairs"] == 2
    assert (tmp_path / "out" / "flow.npz").is_file()
    weights = tmp_path / "s.npz"
    cvflow.save_converted(synthetic("searaft-s"), weights)
    table = cvflow.extract(tmp_path / "clips", tmp_path / "scores", "searaft-s", weights=str(weights), device="cpu",
                           progress=False)
    assert table is not None and any((tmp_path / "scores").iterdir())


def test_eval_on_flyingchairs(of):
    pairs = find_pairs(SHARED / "data" / "flyingchairs", "chairs", limit=1)
    res = evaluate(of, pairs, progress=False)
    assert res["pairs"] == 1 and np.isfinite(res["epe"])
