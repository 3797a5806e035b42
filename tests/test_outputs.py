"""No work lost: every output checked before a model runs, clean `error: ...` (exit 2) for every
output problem, OS reasons in cvflow errors, and `cvflow video` refusing to mix runs."""
from __future__ import annotations

import errno
import os

import numpy as np
import pytest

import cvflow
import cvflow.cli.common
from cvflow.io.checkpoint import save_converted
from cvflow.outputs import check_output_dir, check_output_file
from cvflow.video import RUN_FILES, check_earlier_run, run_video
from test_cli import cli_model, frames, run, weights  # noqa: F401  (fixtures)
from test_eval import make_chairs
from test_video import make_video

FLOW = np.zeros((4, 5, 2), np.float32)


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if the CLI gets as far as creating the model."""
    def created(args):
        raise AssertionError("the model was created before the outputs were checked")

    monkeypatch.setattr(cvflow.cli.common, "create", created)


@pytest.fixture
def read_only_fs(monkeypatch):
    """Every new file fails as on a read-only mount (root ignores permission bits, so simulate)."""
    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr("cvflow.outputs.tempfile.mkstemp", refuse)
    return os.strerror(errno.EROFS)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("v14") / "in.mp4", n=4, h=32, w=48)


# -- cvflow flow / viz / convert / eval / video: checked before the model runs ---------------


@pytest.mark.parametrize("out, png, msg", [
    ("{d}", None, r"-o {d} is a directory; give a file name inside it"),
    ("{d}/no/x.flo", None, r"-o {d}/no/x.flo: directory {d}/no does not exist"),
    ("{d}/x.txt", None, r"-o {d}/x.txt: cvflow writes a Middlebury .flo file here; name it with .flo \(got '.txt'\)"),
    ("{d}/x.flo", "{d}/x.txt", r"--png {d}/x.txt: OpenCV has no image writer for its extension '.txt'"),
    ("{d}/x.flo", "{d}/no/x.png", r"--png {d}/no/x.png: directory {d}/no does not exist"),
    ("/proc/x.flo", None, r"-o /proc/x.flo: cannot create files in /proc: "),
])
def test_flow_outputs_checked_first(tmp_path, frames, weights, no_model, capsys, out, png, msg):
    out = out.format(d=tmp_path)
    extra = ["--png", png.format(d=tmp_path)] if png else []
    code, _, err = run(capsys, "flow", *frames, "-m", "test-cli", "--weights", weights, "-o", out, *extra)
    assert code == 2 and "Traceback" not in err
    assert err.startswith("cvflow flow: error: ") and re_search(msg.format(d=tmp_path), err), err
    assert not (tmp_path / "x.flo").exists()


def re_search(pattern, text):
    import re

    return re.search(pattern, text) is not None


def test_flow_read_only_file_system(tmp_path, frames, weights, no_model, read_only_fs, capsys):
    code, _, err = run(capsys, "flow", *frames, "-m", "test-cli", "--weights", weights, "-o", tmp_path / "x.flo")
    assert code == 2 and f"cannot create files in {tmp_path}: {read_only_fs}" in err


def test_flow_existing_output_is_replaced(tmp_path, frames, weights, capsys):
    (tmp_path / "x.flo").write_bytes(b"old")
    code, _, _ = run(capsys, "flow", *frames, "-m", "test-cli", "--weights", weights, "-o", tmp_path / "x.flo")
    assert code == 0 and cvflow.readOpticalFlow(tmp_path / "x.flo").shape == (20, 30, 2)


def test_write_failure_after_the_checks_is_clean(tmp_path, frames, weights, monkeypatch, capsys):
    """An OSError nothing could foresee (disk full) still ends in `error: ...` and exit 2."""
    def full(path, flow):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(cvflow, "writeOpticalFlow", full)
    code, _, err = run(capsys, "flow", *frames, "-m", "test-cli", "--weights", weights, "-o", tmp_path / "x.flo")
    assert code == 2 and f"cvflow flow: error: {tmp_path / 'x.flo'}: No space left on device" in err
    assert "Traceback" not in err


def test_viz_errors_are_clean(tmp_path, capsys):
    flo = tmp_path / "f.flo"
    cvflow.writeOpticalFlow(flo, FLOW)
    code, _, err = run(capsys, "viz", tmp_path, "-o", tmp_path / "x.png")
    assert code == 2 and f"cvflow viz: error: cannot read flow file '{tmp_path}': Is a directory" in err
    code, _, err = run(capsys, "viz", flo, "-o", tmp_path)
    assert code == 2 and f"-o {tmp_path} is a directory" in err
    code, _, err = run(capsys, "viz", tmp_path / "missing.flo", "-o", tmp_path / "x.txt")
    assert code == 2 and "no image writer for its extension '.txt'" in err  # the output is checked first


@pytest.mark.parametrize("dst, msg", [
    ("{d}/no/x.npz", "DST {d}/no/x.npz: directory {d}/no does not exist"),
    ("{d}", "DST {d} is a directory"),
    ("{d}/x.pth", "DST {d}/x.pth: cvflow writes an .npz archive here; name it with .npz"),
])
def test_convert_outputs_checked_first(tmp_path, monkeypatch, capsys, dst, msg):
    monkeypatch.setattr("cvflow.io.checkpoint.load_weights", lambda p: pytest.fail("weights read first"))
    code, _, err = run(capsys, "convert", tmp_path / "w.pth", dst.format(d=tmp_path))
    assert code == 2 and f"cvflow convert: error: {msg.format(d=tmp_path)}" in err


@pytest.mark.parametrize("js, msg", [
    ("{d}/no/r.json", "--json {d}/no/r.json: directory {d}/no does not exist"),
    ("{d}/r.txt", "--json {d}/r.txt: cvflow writes a .json file here; name it with .json"),
    ("{d}", "--json {d} is a directory"),
])
def test_eval_json_checked_before_the_evaluation(tmp_path, weights, no_model, capsys, js, msg):
    make_chairs(tmp_path, n=1)
    code, _, err = run(capsys, "eval", tmp_path, "--dataset", "chairs", "-m", "test-cli", "--weights", weights,
                       "--json", js.format(d=tmp_path), "--no-progress")
    assert code == 2 and f"cvflow eval: error: {msg.format(d=tmp_path)}" in err


def test_video_output_checked_first(tmp_path, video, weights, no_model, read_only_fs, capsys):
    (tmp_path / "file").write_text("x")
    code, _, err = run(capsys, "video", video, "-m", "test-cli", "--weights", weights, "-o", tmp_path / "file")
    assert code == 2 and f"-o {tmp_path / 'file'} exists and is not a directory" in err
    code, _, err = run(capsys, "video", video, "-m", "test-cli", "--weights", weights, "-o", tmp_path / "a" / "b")
    assert code == 2 and f"-o {tmp_path / 'a' / 'b'}: cannot create files in {tmp_path}: {read_only_fs}" in err
    assert err.count("error") == 1 and "Traceback" not in err


def test_video_refuses_an_earlier_run_unless_overwrite(tmp_path, video, weights, capsys):
    args = ["video", video, "-m", "test-cli", "--weights", weights, "-o", tmp_path, "--no-progress", "--no-mp4"]
    assert run(capsys, *args)[0] == 0
    (tmp_path / "flow_000007.flo").write_bytes(b"stale")  # a longer earlier run
    (tmp_path / "notes.txt").write_text("mine")
    code, _, err = run(capsys, *args)
    assert code == 2 and (f"cvflow video: error: {tmp_path} holds an earlier run: 4 files (flow_000000.flo, "
                          "flow_000001.flo, flow_000002.flo, ...); pass --overwrite") in err
    code, _, _ = run(capsys, *args, "--overwrite", "--npz")
    assert code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flow.npz", "notes.txt"]


def test_run_video_overwrite(tmp_path, video):
    algo = cvflow.create("test-cli", weights={"flow": np.array([1.0, 0.0], np.float32)}, device="cpu")
    run_video(video, algo, tmp_path, mp4=False, progress=False)
    with pytest.raises(cvflow.OutputError, match=r"holds an earlier run: 3 files \(flow_000000.flo, flow_000001.flo, "
                                                 r"flow_000002.flo\); pass --overwrite \(overwrite=True\)"):
        run_video(video, algo, tmp_path, npz=True, progress=False)
    res = run_video(video, algo, tmp_path, npz=True, mp4=False, progress=False, overwrite=True)
    assert res["pairs"] == 3 and sorted(p.name for p in tmp_path.iterdir()) == ["flow.npz"]
    assert check_earlier_run(tmp_path / "empty") == [] and "flow.mp4" in RUN_FILES


# -- the checks themselves -----------------------------------------------------------------


def test_check_output_file_and_dir(tmp_path):
    assert check_output_file(tmp_path / "a.flo", "-o", "flo") == tmp_path / "a.flo"
    assert check_output_file(tmp_path / "a.JSON", "--json", "json") == tmp_path / "a.JSON"
    assert check_output_file(tmp_path / "a.jpg", "--png", "image") == tmp_path / "a.jpg"
    assert not list(tmp_path.iterdir())  # the probe leaves nothing behind
    with pytest.raises(cvflow.InputError, match=r"x: OpenCV has no image writer for its extension '\(none\)'"):
        check_output_file(tmp_path / "x", "--png", "image")
    with pytest.raises(cvflow.OutputError, match=r"cannot create files in /proc: No such file or directory"):
        check_output_file("/proc/x.flo", "-o", "flo")
    assert check_output_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    (tmp_path / "f").write_text("")
    with pytest.raises(cvflow.OutputError, match=r"-o .*f/x.flo: directory .*/f is a file, not a directory"):
        check_output_file(tmp_path / "f" / "x.flo", "-o", "flo")
    with pytest.raises(cvflow.OutputError, match=r"f/sub: .*/f is a file, so the directory cannot be created"):
        check_output_dir(tmp_path / "f" / "sub", "-o")


# -- library I/O: cvflow errors with the OS's reason -------------------------------------------


def test_read_and_write_flow_on_a_directory(tmp_path):
    with pytest.raises(cvflow.CvflowOSError, match=r"cannot read flow file '.*': Is a directory") as exc:
        cvflow.readOpticalFlow(tmp_path)
    assert exc.value.errno == errno.EISDIR and isinstance(exc.value, OSError)
    with pytest.raises(cvflow.CvflowOSError, match=r"cannot write '.*': Is a directory"):
        cvflow.writeOpticalFlow(tmp_path, FLOW)
    with pytest.raises(cvflow.CvflowOSError, match=r"cannot read KITTI flow file '.*': Is a directory"):
        cvflow.read_kitti_flow(tmp_path)


def test_write_flow_says_what_really_failed(tmp_path):
    with pytest.raises(cvflow.CvflowFileNotFoundError,
                       match=r"cannot write '/proc/x.flo': No such file or directory \(directory '/proc' exists "
                             r"but does not allow creating files\)"):
        cvflow.writeOpticalFlow("/proc/x.flo", FLOW)
    with pytest.raises(cvflow.CvflowFileNotFoundError, match=r"\(directory '.*/no' does not exist\)"):
        cvflow.writeOpticalFlow(tmp_path / "no" / "x.flo", FLOW)


@pytest.mark.parametrize("module, write", [
    ("cvflow.io.flo", lambda p: cvflow.writeOpticalFlow(p, FLOW)),
    ("cvflow.io.kitti", lambda p: cvflow.write_kitti_flow(p, FLOW)),
])
def test_writes_on_a_read_only_file_system(tmp_path, monkeypatch, module, write):
    def read_only(path, mode="r", *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)

    monkeypatch.setattr(f"{module}.open", read_only, raising=False)
    with pytest.raises(cvflow.CvflowOSError, match=r"cannot write '.*x.png': Read-only file system") as exc:
        write(tmp_path / "x.png")
    assert exc.value.errno == errno.EROFS and exc.value.filename == str(tmp_path / "x.png")


def test_save_converted_into_a_directory(tmp_path):
    with pytest.raises(cvflow.CvflowOSError, match=r"cannot write '.*': Is a directory"):
        save_converted({"w": np.zeros(3, np.float32)}, tmp_path)
    assert not list(tmp_path.iterdir())  # no .part file left


def test_read_only_flow_argument_checked_before_the_forward_pass(monkeypatch):
    algo = cvflow.create("test-cli", weights={"flow": np.array([1.0, 0.0], np.float32)}, device="cpu")
    img = np.zeros((8, 8, 3), np.uint8)
    flow = np.zeros((8, 8, 2), np.float32)
    flow.flags.writeable = False
    monkeypatch.setattr(algo, "_run", lambda *a: pytest.fail("the forward pass ran"))
    with pytest.raises(cvflow.InputError, match=r"`flow` is read-only \(shape \(8, 8, 2\) float32\), so calc "
                                                r"cannot fill it in place; pass a writable array"):
        algo.calc(img, img, flow)


# -- the shared writers: FlowStack and write_atomic -------------------------------------------

def test_flow_stack_streams_flows_into_one_archive(tmp_path):
    from cvflow.io.npz import FlowStack

    stack = FlowStack(tmp_path / "x.raw", np.float16)
    flows = [np.full((3, 4, 2), k, np.float32) for k in range(3)]
    for k, f in enumerate(flows):
        stack.add((k, k + 1), f)
    stack.write_npz(tmp_path / "x.npz", path=np.array("clip.mp4"))   # "path" is an array's name too
    stack.discard()
    assert not (tmp_path / "x.raw").exists()
    with np.load(tmp_path / "x.npz") as z:
        assert z["flow"].dtype == np.dtype("<f2") and z["flow"].shape == (3, 3, 4, 2)
        np.testing.assert_array_equal(z["flow"], np.stack(flows))
        np.testing.assert_array_equal(z["frame_index"], [[0, 1], [1, 2], [2, 3]])
        assert str(z["path"]) == "clip.mp4"


def test_write_atomic_leaves_no_partial_file(tmp_path):
    from cvflow.io.atomic import write_atomic

    final, tmp = tmp_path / "out.txt", tmp_path / ".tmp-out.txt"
    final.write_text("old")

    def fail(path):
        path.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(final, fail, tmp)
    assert final.read_text() == "old" and not tmp.exists()
    write_atomic(final, lambda path: path.write_text("new"), tmp)
    assert final.read_text() == "new" and not tmp.exists()
