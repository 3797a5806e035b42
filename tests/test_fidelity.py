"""cv2 fidelity: cv2.error input errors, the cv2.Algorithm surface (settings through
cv2.FileStorage), float frames in 0..1, Middlebury unknown flow and layout; tidy-ups."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

import cvflow
from cvflow.evaluate import evaluate, find_pairs
from cvflow.io.image import read_image
from cvflow.models.base import REGISTRY, ModelDef, register

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
MIDDLEBURY = SHARED / "data" / "middlebury"
RAFT_SMALL = SHARED / "weights" / "raft-small.pth"


def _forward(params, img0, img1, config, options, init_flow):
    return np.broadcast_to(params["flow"] * options["iters"], img0.shape[:2] + (2,)).astype(np.float32)


@pytest.fixture(autouse=True, scope="module")
def model():
    m = register(ModelDef(name="test-fid", family="test", config={}, param_shapes=lambda c: {"flow": (2,)},
                          forward=_forward, options={"iters": 1, "warm_start": False, "gain": 0.5}))
    yield m
    REGISTRY.pop(m.name, None)


@pytest.fixture
def weights_file(tmp_path):
    path = tmp_path / "w.npz"
    np.savez(path, flow=np.array([1.0, 0.0], np.float32))
    return path


def make(**options):
    return cvflow.create("test-fid", weights={"flow": np.array([1.0, 0.0], np.float32)}, device="cpu", **options)


IMG = np.zeros((8, 8, 3), np.uint8)


# -- cv2.error ---------------------------------------------------------------------------------


def test_input_errors_are_cv2_errors_too():
    algo = make()
    with pytest.raises(cv2.error, match=r"`I0` must be a 2-D or 3-D uint8/float array"):
        algo.calc(None, IMG, None)
    with pytest.raises(ValueError, match=r"`I0` and `I1` must have the same size"):
        algo.calc(IMG, IMG[:4], None)
    with pytest.raises(cv2.error, match=r"flags must be an int, got str"):
        algo.setFlags("4")
    with pytest.raises(TypeError, match=r"option 'iters' must be an int"):
        algo.setIters(2.5)
    assert issubclass(cvflow.InputError, (cvflow.CvflowError, ValueError, cv2.error))
    assert issubclass(cvflow.CvflowTypeError, TypeError) and issubclass(cvflow.CvflowTypeError, cv2.error)
    try:  # the pattern of code written for cv2.DenseOpticalFlow
        algo.calc(IMG, np.zeros((8, 8, 4), np.uint8), None)
    except cv2.error as e:
        assert "`I1` must be" in str(e)


# -- the cv2.Algorithm surface ---------------------------------------------------------------


def test_empty_clear_and_default_name():
    algo = make()
    assert algo.empty() is False and algo.getDefaultName() == "DenseOpticalFlow.cvflow.test-fid"
    algo.clear()  # releases the buffers kept between calls; the object still works
    assert algo.calc(IMG, IMG, None).shape == (8, 8, 2)


@pytest.mark.parametrize("suffix", [".yml", ".xml", ".json"])
def test_save_and_read_settings(tmp_path, weights_file, suffix):
    algo = cvflow.create("test-fid", weights=weights_file, device="cpu", iters=3 << 32, warm_start=True, gain=0.25)
    algo.setFlags(cvflow.OPTFLOW_USE_INITIAL_FLOW)
    path = tmp_path / f"s{suffix}"
    algo.save(path)
    fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_READ)
    node = fs.getFirstTopLevelNode()
    assert node.name() == "DenseOpticalFlow_cvflow_test-fid" and node.getNode("model").string() == "test-fid"
    w = node.getNode("weights")
    assert w.getNode("path").string() == str(weights_file)
    assert w.getNode("sha256").string() == hashlib.sha256(weights_file.read_bytes()).hexdigest()
    fresh = cvflow.create("test-fid", weights=weights_file, device="cpu")
    fresh.read(node)
    assert fresh.options == {"iters": 3 << 32, "warm_start": True, "gain": 0.25}  # beyond FileStorage's int32
    assert fresh.getFlags() == cvflow.OPTFLOW_USE_INITIAL_FLOW
    fresh2 = make()
    fresh2.read(fs.root())  # a file's top level holding one settings map also works
    assert fresh2.getIters() == 3 << 32
    fs.release()
    assert path.stat().st_size < 1000  # settings, never the weights


def test_write_into_an_open_file_storage(tmp_path):
    algo = make(iters=2)
    path = str(tmp_path / "pipeline.yml")
    fs = cv2.FileStorage(path, cv2.FILE_STORAGE_WRITE)
    fs.write("stage", "flow")
    algo.write(fs, "optflow")
    fs.release()
    text = Path(path).read_text()
    assert "stage: flow" in text and "optflow:" in text and "iters: 2" in text and "warm_start: 0" in text
    fs = cv2.FileStorage(path, cv2.FILE_STORAGE_READ)  # kept open while its nodes are used
    node = fs.getNode("optflow")
    assert node.getNode("weights").getNode("path").string() == ""  # weights given as arrays
    assert node.getNode("weights").getNode("sha256").string() == cvflow.settings.weights_sha256(make())
    other = make()
    other.read(node)
    assert other.getIters() == 2


def test_settings_errors(tmp_path):
    algo = make()
    with pytest.raises(cvflow.InputError, match=r"filename .*s.txt: cv2.FileStorage writes .yml, .yaml, .xml or "
                                                r".json files"):
        algo.save(tmp_path / "s.txt")
    with pytest.raises(cvflow.OutputError, match=r"filename .*/no/s.yml: directory .*/no does not exist"):
        algo.save(tmp_path / "no" / "s.yml")
    with pytest.raises(cvflow.CvflowTypeError, match=r"`fs` must be a cv2.FileStorage opened for writing, got str"):
        algo.write("s.yml")
    with pytest.raises(cvflow.CvflowTypeError, match=r"`fn` must be a cv2.FileNode .*, got str"):
        algo.read("s.yml")
    path = str(tmp_path / "s.yml")
    fs = cv2.FileStorage(path, cv2.FILE_STORAGE_WRITE)
    fs.startWriteStruct("x", cv2.FileNode_MAP)
    fs.write("model", "raft")
    fs.endWriteStruct()
    fs.write("y", 1)
    fs.release()
    fs = cv2.FileStorage(path, cv2.FILE_STORAGE_READ)
    with pytest.raises(cvflow.InputError, match=r"the settings are for model 'raft', this algorithm is 'test-fid'"):
        algo.read(fs.getNode("x"))
    with pytest.raises(cvflow.InputError, match=r"`fn` holds no cvflow settings"):
        algo.read(fs.getNode("y"))


# -- float frames in 0..1 ------------------------------------------------------------------------


def test_unit_range_float_frames_warn_once():
    algo = make()
    f = np.full((8, 8, 3), 0.5, np.float32)
    f[0, 0] = 0.9
    with pytest.warns(cvflow.InputRangeWarning, match=r"`I0` and `I1` are float frames with values in \[0.5, "
                                                      r"0.9\]; cvflow expects uint8 or float in 0..255"):
        algo.calc(f, f, None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        algo.calc(f, f, None)  # once per object
        make().calc(f * 255, f * 255, None)  # 0..255 floats and uint8 are what cvflow expects
        make().calc(IMG, IMG, None)
        make().calc(np.zeros((8, 8), np.float32), np.zeros((8, 8), np.float32), None)  # all black: no range


# -- Middlebury unknown flow -------------------------------------------------------------------


def test_flow_to_color_paints_unknown_black_and_scales_from_known():
    flow = np.zeros((4, 4, 2), np.float32)
    flow[..., 0] = 2.0
    flow[0, 0] = (1e10, 0.0)
    flow[0, 1] = (0.0, -2e9)
    img = cvflow.flow_to_color(flow)
    assert (img[0, :2] == 0).all()
    np.testing.assert_array_equal(img[1:], cvflow.flow_to_color(flow[1:]))  # scale from the known pixels


def test_rubberwhale_color_and_epe():
    if not MIDDLEBURY.is_dir():
        pytest.skip(f"Middlebury RubberWhale not found at {MIDDLEBURY} (../shared beside the project)")
    gt = cvflow.readOpticalFlow(MIDDLEBURY / "RubberWhale.flo")
    known = cvflow.known_flow(gt)
    assert 0.01 < 1 - known.mean() < 0.05
    img = cvflow.flow_to_color(gt)
    white = (img == 255).all(axis=2).mean()
    assert white < 0.05 and ((img == 0).all(axis=2) == ~known).all()
    zero = np.zeros_like(gt)
    g = gt[known].astype(np.float64)
    expected = float(np.hypot(g[:, 0], g[:, 1]).mean())
    assert cvflow.epe(zero, gt) == pytest.approx(expected, rel=1e-9)
    assert cvflow.epe(zero, gt, unknown_thresh=None) > 1e7  # the old behaviour, on request
    assert cvflow.outlier_rates(zero, gt, thresholds=(1,))[1] == pytest.approx(
        float((np.hypot(g[:, 0], g[:, 1]) > 1).mean()))


def test_metrics_with_all_gt_unknown():
    gt = np.full((2, 2, 2), 1e10, np.float32)
    with pytest.raises(cvflow.InputError, match=r"gt flow is unknown \(\|u\| or \|v\| > 1e\+09, or not finite\) at "
                                                r"every valid pixel"):
        cvflow.epe(np.zeros_like(gt), gt)


def make_middlebury(root: Path) -> Path:
    """The `other-data` / `other-gt-flow` layout of Middlebury's release, from ../shared's RubberWhale."""
    if not MIDDLEBURY.is_dir():
        pytest.skip(f"Middlebury RubberWhale not found at {MIDDLEBURY} (../shared beside the project)")
    (root / "other-data" / "RubberWhale").mkdir(parents=True)
    (root / "other-gt-flow" / "RubberWhale").mkdir(parents=True)
    (root / "other-data" / "RubberWhale" / "frame10.png").symlink_to(MIDDLEBURY / "RubberWhale1.png")
    (root / "other-data" / "RubberWhale" / "frame11.png").symlink_to(MIDDLEBURY / "RubberWhale2.png")
    (root / "other-gt-flow" / "RubberWhale" / "flow10.flo").symlink_to(MIDDLEBURY / "RubberWhale.flo")
    return root


def test_middlebury_layout(tmp_path):
    root = make_middlebury(tmp_path)
    (root / "other-gt-flow" / "RubberWhale" / "flow12.flo").symlink_to(MIDDLEBURY / "RubberWhale.flo")  # no frames
    pairs = find_pairs(root, "middlebury")
    assert [(p.name, Path(p.frame0).name, Path(p.frame1).name) for p in pairs] == \
        [("RubberWhale/flow10", "frame10.png", "frame11.png")]
    res = evaluate(make(iters=1), pairs, progress=False)  # constant flow (1, 0)
    gt = cvflow.readOpticalFlow(MIDDLEBURY / "RubberWhale.flo")
    known = cvflow.known_flow(gt)
    assert res["per_pair"][0]["valid_pixels"] == int(known.sum())
    assert res["epe"] == pytest.approx(cvflow.epe(np.broadcast_to(np.float32([1, 0]), gt.shape), gt), rel=1e-9)
    with pytest.raises(cvflow.InputError, match=r"no middlebury pairs found under .*: looked for "
                                                r".*/other-data/<sequence>/frameNN.png"):
        find_pairs(tmp_path / "other-data", "middlebury")


@pytest.mark.slow
def test_raft_small_rubberwhale_matches_reference(tmp_path, capsys):
    """`cvflow eval --dataset middlebury`: RAFT-small, 12 updates, RubberWhale -> EPE 0.320 px, as the
    authors' code (../shared/README.md)."""
    if not RAFT_SMALL.is_file():
        pytest.skip(f"raft-small.pth not found at {RAFT_SMALL}")
    from cvflow.cli import main

    root = make_middlebury(tmp_path)
    code = main(["eval", str(root), "--dataset", "middlebury", "-m", "raft-small", "--weights", str(RAFT_SMALL),
                 "--iters", "12", "--device", "cpu", "--json", "-", "--no-progress"])
    assert code == 0
    res = json.loads(capsys.readouterr().out)
    assert res["pairs"] == 1 and abs(res["epe"] - 0.320) < 0.0015, res["epe"]


# -- tidy-ups -------------------------------------------------------------------------------------


def test_warp_is_always_the_function():
    code = ("import inspect, cvflow, cvflow.warping, cvflow.evaluate, cvflow.cli, sys\n"
            "assert inspect.isfunction(cvflow.warp) and cvflow.warp is cvflow.warping.warp\n"
            "assert 'cvflow.video' not in sys.modules, 'progress is not in video.py any more'")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_one_image_reader(tmp_path):
    with pytest.raises(cvflow.CvflowFileNotFoundError, match=r"no such image file: .*none.png"):
        read_image(tmp_path / "none.png")
    with pytest.raises(cvflow.CvflowOSError, match=r"cannot read image .*: not a regular file"):
        read_image(tmp_path)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(cvflow.InputError, match=r"cannot decode image .*bad.png \(not an image format OpenCV"):
        read_image(tmp_path / "bad.png")
    cv2.imwrite(str(tmp_path / "g.png"), np.zeros((3, 4), np.uint8))
    assert read_image(tmp_path / "g.png").shape == (3, 4, 3)


def test_iters_help_states_the_default(capsys):
    from cvflow.cli import main

    with pytest.raises(SystemExit):
        main(["flow", "--help"])
    assert "update iterations (RAFT family; default 12)" in " ".join(capsys.readouterr().out.split())
