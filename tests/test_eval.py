"""cvflow.evaluate: dataset discovery and metrics, on generated layouts and on ../shared FlyingChairs."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

import cvflow
from cvflow.evaluate import Pair, evaluate, find_pairs, format_table, load_gt
from cvflow.models.base import REGISTRY, ModelDef, register

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CHAIRS = SHARED / "data" / "flyingchairs"
RAFT_SMALL = SHARED / "weights" / "raft-small.pth"
H, W = 24, 32


def _shapes(config):
    return {"flow": (2,)}


def _constant(params, img0, img1, config, options, init_flow):
    return np.broadcast_to(params["flow"], img0.shape[:2] + (2,)).astype(np.float32)


@pytest.fixture(autouse=True, scope="module")
def const_model():
    model = register(ModelDef(name="test-eval-const", family="test", config={}, param_shapes=_shapes,
                              forward=_constant, options={"iters": 1}))
    yield model
    REGISTRY.pop(model.name, None)


def make(flow=(1.0, 0.0)):
    return cvflow.create("test-eval-const", weights={"flow": np.array(flow, np.float32)}, device="cpu")


def _img(path, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    assert cv2.imwrite(str(path), rng.integers(0, 256, (H, W, 3), dtype=np.uint8))


def _flo(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    cvflow.writeOpticalFlow(path, np.broadcast_to(np.float32(value), (H, W, 2)))


def make_sintel(root: Path, scenes=("alley_1", "market_2"), frames=3):
    for s in scenes:
        for i in range(1, frames + 1):
            for p in ("clean", "final"):
                _img(root / "training" / p / s / f"frame_{i:04d}.png", i)
            if i < frames:
                _flo(root / "training" / "flow" / s / f"frame_{i:04d}.flo", (4.0, 0.0))
    return root


def make_kitti(root: Path, n=2):
    for i in range(n):
        _img(root / "training" / "image_2" / f"{i:06d}_10.png", 2 * i)
        _img(root / "training" / "image_2" / f"{i:06d}_11.png", 2 * i + 1)
        gt = np.zeros((H, W, 2), np.float32)
        gt[..., 0] = 10.0
        valid = np.zeros((H, W), bool)
        valid[:, : W // 2] = True
        (root / "training" / "flow_occ").mkdir(parents=True, exist_ok=True)
        cvflow.write_kitti_flow(root / "training" / "flow_occ" / f"{i:06d}_10.png", gt, valid)
    return root


def make_chairs(root: Path, n=3, style="release"):
    names = {"release": ("_img1.ppm", "_img2.ppm", "_flow.flo"), "shared": ("-img0.ppm", "-img1.ppm", "-gt.flo")}
    s0, s1, sg = names[style]
    for i in range(n):
        stem = f"{i + 1:05d}" if style == "release" else f"{i:07d}"
        _img(root / f"{stem}{s0}", i)
        _img(root / f"{stem}{s1}", i + 10)
        _flo(root / f"{stem}{sg}", (0.0, float(i)))
    return root


# -- discovery ------------------------------------------------------------------------


def test_find_sintel_pairs(tmp_path):
    root = make_sintel(tmp_path)
    pairs = find_pairs(root, "sintel")
    assert [p.name for p in pairs] == ["alley_1/frame_0001", "alley_1/frame_0002",
                                       "market_2/frame_0001", "market_2/frame_0002"]
    assert pairs[0].frame0.endswith("training/clean/alley_1/frame_0001.png")
    assert pairs[0].frame1.endswith("training/clean/alley_1/frame_0002.png")
    assert pairs[0].gt.endswith("training/flow/alley_1/frame_0001.flo") and pairs[0].gt_format == "flo"
    final = find_pairs(root / "training", "sintel", pass_name="final", limit=3)  # `training/` as root works too
    assert len(final) == 3 and "/final/" in final[0].frame0


def test_find_kitti_pairs(tmp_path):
    pairs = find_pairs(make_kitti(tmp_path), "kitti")
    assert [(p.name, Path(p.frame1).name, p.gt_format) for p in pairs] == [
        ("000000", "000000_11.png", "kitti"), ("000001", "000001_11.png", "kitti")]
    flow, valid = load_gt(pairs[0])
    assert valid.sum() == H * W // 2 and np.allclose(flow[valid], [10.0, 0.0])


@pytest.mark.parametrize("style, sub", [("release", ""), ("release", "data"), ("shared", "")])
def test_find_chairs_pairs(tmp_path, style, sub):
    make_chairs(tmp_path / sub if sub else tmp_path, style=style)
    pairs = find_pairs(tmp_path, "chairs", limit=2)
    assert len(pairs) == 2
    assert pairs[0].name == ("00001" if style == "release" else "0000000")


def test_chairs_pair_without_gt_is_skipped(tmp_path):
    make_chairs(tmp_path)
    (tmp_path / "00002_flow.flo").unlink()
    assert [p.name for p in find_pairs(tmp_path, "chairs")] == ["00001", "00003"]


@pytest.mark.parametrize("dataset, msg", [
    ("sintel", r"no sintel pairs found under .*: looked for .*/clean/<scene>/frame_XXXX.png with ground truth "
               r".*/flow/<scene>/frame_XXXX.flo"),
    ("kitti", r"no kitti pairs found under .*: looked for .*/image_2/XXXXXX_10.png and XXXXXX_11.png with "
              r"ground truth .*/flow_occ/XXXXXX_10.png"),
    ("chairs", r"no chairs pairs found under .*: looked for .*/NNNNN_img1.ppm, NNNNN_img2.ppm, NNNNN_flow.flo "
               r"or .*-img0.ppm"),
])
def test_no_pairs_names_the_layout(tmp_path, dataset, msg):
    (tmp_path / "something.txt").write_text("x")
    with pytest.raises(cvflow.InputError, match=msg):
        find_pairs(tmp_path, dataset)


def test_find_pairs_bad_arguments(tmp_path):
    with pytest.raises(cvflow.CvflowFileNotFoundError, match="dataset root is not a directory: .*nope"):
        find_pairs(tmp_path / "nope", "chairs")
    with pytest.raises(cvflow.InputError, match="unknown dataset 'things'; valid datasets: sintel, kitti, chairs"):
        find_pairs(tmp_path, "things")
    with pytest.raises(cvflow.InputError, match="unknown Sintel pass 'albedo'; valid passes: clean, final"):
        find_pairs(tmp_path, "sintel", pass_name="albedo")
    with pytest.raises(cvflow.InputError, match=r"`limit` must be an int >= 1 or None, got 0"):
        find_pairs(tmp_path, "chairs", limit=0)


# -- metrics --------------------------------------------------------------------------


def test_evaluate_sintel_constant_error(tmp_path):
    res = evaluate(make((1.0, 0.0)), find_pairs(make_sintel(tmp_path), "sintel"), progress=False)
    assert res["pairs"] == 4
    assert res["epe"] == pytest.approx(3.0)  # gt (4, 0), prediction (1, 0)
    assert (res["1px"], res["3px"], res["5px"]) == (1.0, 0.0, 0.0)
    assert "fl_all" not in res and res["pairs_per_s"] > 0 and len(res["per_pair"]) == 4
    assert res["per_pair"][0]["valid_pixels"] == H * W


def test_evaluate_kitti_uses_valid_mask_and_fl_all(tmp_path):
    res = evaluate(make((6.0, 0.0)), find_pairs(make_kitti(tmp_path), "kitti"), progress=False)
    assert res["epe"] == pytest.approx(4.0)  # |10 - 6| on the valid half only
    assert res["fl_all"] == 1.0 and res["3px"] == 1.0 and res["5px"] == 0.0
    assert res["per_pair"][0]["valid_pixels"] == H * W // 2
    res = evaluate(make((9.0, 0.0)), find_pairs(tmp_path, "kitti"), progress=False)
    assert res["fl_all"] == 0.0 and res["epe"] == pytest.approx(1.0)


def test_evaluate_pools_rates_over_pixels_and_averages_epe_over_pairs(tmp_path):
    make_chairs(tmp_path, n=3)  # gt (0, 0), (0, 1), (0, 2); prediction 0
    res = evaluate(make((0.0, 0.0)), find_pairs(tmp_path, "chairs"), progress=False)
    assert res["epe"] == pytest.approx(1.0)
    assert res["1px"] == pytest.approx(1 / 3)
    assert [r["epe"] for r in res["per_pair"]] == pytest.approx([0.0, 1.0, 2.0])
    table = format_table(res, title="chairs", per_pair=True)
    assert table.splitlines()[0] == "chairs"
    assert "mean (3 pairs)" in table and "00002" in table and "33.33" in table and "pairs/s" in table
    assert "Fl-all" not in table


def test_evaluate_errors_name_the_pair(tmp_path):
    make_chairs(tmp_path, n=2)
    (tmp_path / "00002_img2.ppm").write_bytes(b"P6 broken")
    with pytest.raises(cvflow.InputError, match=r"pair 00002: cannot decode image .*00002_img2.ppm"):
        evaluate(make(), find_pairs(tmp_path, "chairs"), progress=False)
    bad = Pair("x", str(tmp_path / "00001_img1.ppm"), str(tmp_path / "00001_img2.ppm"),
               str(tmp_path / "00001_img1.ppm"), "flo")
    with pytest.raises(cvflow.FlowFormatError, match="bad .flo magic"):
        evaluate(make(), [bad], progress=False)
    with pytest.raises(cvflow.InputError, match="no pairs to evaluate"):
        evaluate(make(), [], progress=False)


def test_gt_shape_mismatch(tmp_path):
    make_chairs(tmp_path, n=1)
    cvflow.writeOpticalFlow(tmp_path / "00001_flow.flo", np.zeros((5, 5, 2), np.float32))
    with pytest.raises(cvflow.InputError, match=r"pair 00001: flow and gt shapes differ"):
        evaluate(make(), find_pairs(tmp_path, "chairs"), progress=False)


def test_unknown_flow_marker_is_invalid(tmp_path):
    make_chairs(tmp_path, n=1)
    gt = np.zeros((H, W, 2), np.float32)
    gt[0, :] = 1e10  # Middlebury "unknown"
    cvflow.writeOpticalFlow(tmp_path / "00001_flow.flo", gt)
    res = evaluate(make((0.0, 0.0)), find_pairs(tmp_path, "chairs"), progress=False)
    assert res["epe"] == 0.0 and res["per_pair"][0]["valid_pixels"] == (H - 1) * W


# -- the real model on ../shared --------------------------------------------------------


def test_shared_chairs_layout_found():
    if not CHAIRS.is_dir():
        pytest.skip(f"FlyingChairs pairs not found at {CHAIRS} (../shared beside the project)")
    pairs = find_pairs(CHAIRS, "chairs")
    assert [p.name for p in pairs] == [f"{i:07d}" for i in range(9)]  # ../shared holds nine pairs
    assert [p.name for p in find_pairs(CHAIRS, "chairs", limit=5)] == [f"{i:07d}" for i in range(5)]


@pytest.mark.slow
def test_raft_small_chairs_epe_matches_reference(capsys):
    """`cvflow eval` end to end: RAFT-small, 12 updates, the first five FlyingChairs pairs (`--limit 5`:
    the reference's) -> 1.473 px."""
    if not (CHAIRS.is_dir() and RAFT_SMALL.is_file()):
        pytest.skip(f"FlyingChairs pairs or raft-small.pth not found under {SHARED}")
    from cvflow.cli import main

    index = json.loads((SHARED / "golden" / "raft" / "index_raft.json").read_text())
    ref = {c["frame0"].split("/")[-1][:7]: c["epe_vs_gt"] for c in index if "chairs" in c["name"]}
    code = main(["eval", str(CHAIRS), "--dataset", "chairs", "-m", "raft-small", "--weights", str(RAFT_SMALL),
                 "--iters", "12", "--device", "cpu", "--limit", "5", "--json", "-", "--no-progress"])
    assert code == 0
    out = capsys.readouterr()
    res = json.loads(out.out)
    assert res["pairs"] == 5 and res["model"] == "raft-small" and res["options"]["iters"] == 12
    assert abs(res["epe"] - 1.473) < 0.01, res["epe"]
    assert res["epe"] == pytest.approx(np.mean(list(ref.values())), abs=1e-3)
    for row in res["per_pair"]:
        assert row["epe"] == pytest.approx(ref[row["name"]], abs=1e-3)
    assert "mean (5 pairs)" in out.err and "1.473" in out.err
