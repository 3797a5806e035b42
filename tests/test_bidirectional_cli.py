"""`cvflow flow --backward --occlusion`, `cvflow video --occlusion` and run_video(occlusion=True)."""
from __future__ import annotations

import re

import cv2
import numpy as np
import pytest

import cvflow
from cvflow.cli import main
from cvflow.models.base import REGISTRY, ModelDef, register
from cvflow.video import iter_video_bidirectional, run_video
from test_video import make_video

NAME = "test-bidir-cli"


def _forward(params, img0, img1, config, options, init_flow):
    # Frame-order dependent: (gain * mean brightness difference) in x; the left half of
    # the frame moves by 3 px more, so the forward-backward check marks pixels there.
    d = np.float32(params["gain"][0] * (img1.mean() - img0.mean()))
    flow = np.zeros(img0.shape[:2] + (2,), np.float32)
    flow[..., 0] = d
    flow[:, : img0.shape[1] // 2, 0] += 3
    return flow


@pytest.fixture(autouse=True, scope="module")
def model():
    m = register(ModelDef(name=NAME, family="test", config={}, param_shapes=lambda c: {"gain": (1,)},
                          forward=_forward, options={"iters": 1}))
    yield m
    REGISTRY.pop(NAME, None)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "w.npz"
    np.savez(path, gain=np.array([1.0], np.float32))
    return str(path)


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    d = tmp_path_factory.mktemp("frames")
    assert cv2.imwrite(str(d / "a.png"), np.full((20, 30, 3), 100, np.uint8))
    assert cv2.imwrite(str(d / "b.png"), np.full((20, 30, 3), 102, np.uint8))
    return str(d / "a.png"), str(d / "b.png")


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("v") / "clip.mp4", n=4, h=32, w=48)


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_flow_backward_and_occlusion(tmp_path, frames, weights, capsys):
    fw_path, bw_path, occ_path = tmp_path / "fw.flo", tmp_path / "bw.flo", tmp_path / "occ.png"
    code, out, _ = run(capsys, "flow", *frames, "-m", NAME, "--weights", weights, "-o", fw_path,
                       "--backward", bw_path, "--occlusion", occ_path)
    assert code == 0 and f"wrote {bw_path} (backward flow)" in out and f"wrote {occ_path} (occlusion mask" in out
    fw, bw = cvflow.readOpticalFlow(str(fw_path)), cvflow.readOpticalFlow(str(bw_path))
    np.testing.assert_allclose(fw[0, -1], [2, 0])
    np.testing.assert_allclose(bw[0, -1], [-2, 0])
    mask = cv2.imread(str(occ_path), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (20, 30) and mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 255}
    np.testing.assert_array_equal(mask > 0, cvflow.occlusion_mask(fw, bw))


def test_flow_occlusion_alone(tmp_path, frames, weights, capsys):
    code, _, _ = run(capsys, "flow", *frames, "-m", NAME, "--weights", weights, "-o", tmp_path / "fw.flo",
                     "--occlusion", tmp_path / "occ.png")
    assert code == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["fw.flo", "occ.png"]


@pytest.mark.parametrize("flag, name, match", [
    ("--backward", "bw.txt", r"--backward bw\.txt: cvflow writes a Middlebury \.flo file here; name it with \.flo"),
    ("--occlusion", "occ.xyz", r"--occlusion occ\.xyz: OpenCV has no image writer for its extension '\.xyz'"),
    ("--occlusion", "nodir/occ.png", r"--occlusion nodir/occ\.png: directory .*nodir does not exist"),
    ("--backward", ".", r"--backward \. is a directory"),
])
def test_flow_bad_outputs_fail_before_compute(tmp_path, frames, weights, capsys, monkeypatch, flag, name, match):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cvflow.api.OpticalFlow, "calcBidirectional",
                        lambda *a, **k: pytest.fail("computed before checking the outputs"))
    code, _, err = run(capsys, "flow", *frames, "-m", NAME, "--weights", weights, "-o", "fw.flo", flag, name)
    assert code == 2 and err.startswith("cvflow flow: error: ")
    assert re.search(match, err), err
    assert not (tmp_path / "fw.flo").exists()


def test_video_occlusion(tmp_path, video, weights, capsys):
    out_dir = tmp_path / "out"
    code, out, _ = run(capsys, "video", video, "-m", NAME, "--weights", weights, "-o", out_dir, "--no-progress",
                       "--no-mp4", "--occlusion")
    assert code == 0 and "wrote 3 pairs" in out and "occlusion PNGs" in out
    names = sorted(p.name for p in out_dir.iterdir())
    assert names == sorted([f"{kind}_{k:06d}.{ext}" for k in range(3)
                            for kind, ext in (("flow", "flo"), ("flow_bw", "flo"), ("occ", "png"), ("occ_bw", "png"))])
    fw = cvflow.readOpticalFlow(str(out_dir / "flow_000001.flo"))
    bw = cvflow.readOpticalFlow(str(out_dir / "flow_bw_000001.flo"))
    occ = cv2.imread(str(out_dir / "occ_000001.png"), cv2.IMREAD_UNCHANGED) > 0
    occ_bw = cv2.imread(str(out_dir / "occ_bw_000001.png"), cv2.IMREAD_UNCHANGED) > 0
    np.testing.assert_array_equal(occ, cvflow.occlusion_mask(fw, bw))
    np.testing.assert_array_equal(occ_bw, cvflow.occlusion_mask(bw, fw))
    assert occ.any()


def test_video_occlusion_with_npz_is_refused(tmp_path, video, weights, capsys):
    code, _, err = run(capsys, "video", video, "-m", NAME, "--weights", weights, "-o", tmp_path / "o", "--npz",
                       "--occlusion")
    assert code == 2 and "--occlusion writes per-pair .flo and .png files; it cannot be combined with --npz" in err
    assert not (tmp_path / "o").exists()


def test_run_video_occlusion_with_npz_is_refused(tmp_path, video, weights):
    algo = cvflow.create(NAME, weights=weights, device="cpu")
    with pytest.raises(ValueError, match="`occlusion` writes per-pair .flo and .png files; it cannot be combined"):
        run_video(video, algo, tmp_path / "o", npz=True, occlusion=True, progress=False)
    assert not (tmp_path / "o").exists()


def test_iter_video_bidirectional_gives_calc_bidirectional(video, weights):
    algo = cvflow.create(NAME, weights=weights, device="cpu")
    items = list(iter_video_bidirectional(video, algo, every=2))
    assert [item[0] for item in items] == [0]
    k, f0, f1, fw, bw, occ0, occ1 = items[0]
    for got, want in zip((fw, bw, occ0, occ1), algo.calcBidirectional(f0, f1, occlusion=True)):
        np.testing.assert_array_equal(got, want)
