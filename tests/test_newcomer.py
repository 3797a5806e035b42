"""What a new user trips over (issue 22, item 7): convert overwriting, a size mismatch found
late, Ray's and FFmpeg's noise on stderr, extract's exit status, "1 clips", dir(cvflow), an
empty $CVFLOW_HOME left by an offline create()."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import cvflow
import cvflow.download
from cvflow.cli import main
from test_extraction import make_clip, make_corrupt, synthetic_raft_small

ROOT = Path(__file__).resolve().parents[1]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_convert_refuses_an_existing_destination_unless_overwrite(tmp_path, capsys):
    src, dst = tmp_path / "w.npz", tmp_path / "out.npz"
    cvflow.save_converted({"w": np.ones((2, 3), np.float32)}, src)
    dst.write_bytes(b"precious")
    code, _, err = run(capsys, "convert", src, dst)
    assert code == 2
    assert f"cvflow convert: error: DST {dst} exists; pass --overwrite to replace it" in err
    assert dst.read_bytes() == b"precious"
    code, out, _ = run(capsys, "convert", src, dst, "--overwrite")
    assert code == 0 and f"wrote {dst} (1 tensors)" in out
    assert cvflow.load_weights(dst)["w"].shape == (2, 3)


def test_flow_with_frames_of_different_sizes_fails_before_the_model_loads(tmp_path, capsys, monkeypatch):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    cv2.imwrite(str(a), np.zeros((20, 30, 3), np.uint8))
    cv2.imwrite(str(b), np.zeros((24, 30, 3), np.uint8))

    def no_model(*args, **kw):
        raise AssertionError("the model was created")

    monkeypatch.setattr(cvflow, "create", no_model)
    code, _, err = run(capsys, "flow", a, b, "-m", "raft-small", "-o", tmp_path / "f.flo")
    assert code == 2
    assert (f"cvflow flow: error: FRAME0 {a} is 30x20 but FRAME1 {b} is 30x24; the frames must have the "
            "same size") in err


def test_dir_cvflow_lists_the_api_only():
    names = dir(cvflow)
    for helper in ("annotations", "importlib", "errors", "api"):
        assert helper not in names
    assert {"create", "readOpticalFlow", "CvflowError", "__version__"} <= set(names)
    assert names == sorted(cvflow.__all__)


def test_create_without_weights_leaves_no_empty_cvflow_home(tmp_path, monkeypatch):
    import cvflow.weights as cw

    home = tmp_path / "nested" / "cvflow-home"
    monkeypatch.setenv("CVFLOW_HOME", str(home))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))

    def offline(url, *args, **kw):  # as _fetch reports a network failure: chained to its cause
        raise cvflow.DownloadError(f"could not download {url}: offline (test)") from OSError("offline")

    monkeypatch.setattr(cvflow.download, "_fetch", offline)
    with pytest.raises(cvflow.WeightsError, match=r"no weights for model 'raft-small'"):
        cvflow.create("raft-small")
    assert not home.exists() and not home.parent.exists()
    home.mkdir(parents=True)  # a home that existed before stays
    with pytest.raises(cvflow.WeightsError, match=r"no weights for model 'raft-small'"):
        cvflow.create("raft-small")
    assert home.is_dir() and not list(home.iterdir())


def test_a_corrupt_video_leaves_no_ffmpeg_line_on_stderr(tmp_path):
    bad = make_corrupt(tmp_path / "bad.mp4")
    code = ("import sys, cvflow, cvflow.video as v\n"
            "try:\n    v.open_video(sys.argv[1])\nexcept cvflow.InputError as e:\n    print(e)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(bad)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert proc.stdout.startswith(f"cannot open video {bad}")
    assert "moov atom" not in proc.stderr and proc.stderr == ""


def _extract_cli(tmp_path, engine):
    clips = tmp_path / "clips"
    clips.mkdir()
    make_clip(clips / "good.mp4", n=3, h=48, w=64)
    make_corrupt(clips / "bad.mp4")
    weights = tmp_path / "w.npz"
    cvflow.save_converted(synthetic_raft_small(), weights)
    cmd = [sys.executable, "-m", "cvflow", "extract", str(clips), "-o", str(tmp_path / "out"), "-m", "raft-small",
           "--weights", str(weights), "--iters", "2", "--no-progress", "--engine", engine]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)


def test_extract_with_an_error_row_exits_1_and_says_1_clip(tmp_path):
    proc = _extract_cli(tmp_path, "local")
    assert proc.returncode == 1, proc.stderr
    assert "2 clips: 2 computed, 0 already done, 1 with errors; wrote " in proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and re.fullmatch(
        rf"cvflow extract: 1 clip failed \(status 'error' in {re.escape(str(tmp_path / 'out'))}/scores\.(parquet|csv), "
        r"reason in its `error` column\); a rerun retries them", lines[0]), proc.stderr


@pytest.mark.slow
def test_extract_on_ray_started_by_cvflow_prints_no_ray_noise(tmp_path):
    pytest.importorskip("ray.data", reason="Ray Data not installed (pip install '.[ray]')")
    proc = _extract_cli(tmp_path, "ray")
    assert proc.returncode == 1, proc.stderr
    for noise in ("core_worker.cc", "actor restart will fail", "Token authentication", "moov atom",
                  "RAY_BACKEND_LOG_LEVEL", "Starting execution of Dataset", "Progress bars disabled"):
        assert noise not in proc.stderr, proc.stderr
    assert proc.stderr.strip().startswith("cvflow extract: 1 clip failed"), proc.stderr


def test_weights_of_another_model_say_which_model_they_fit():
    w = synthetic_raft_small()
    with pytest.raises(cvflow.WeightsError, match=r"(?s)weights do not match model 'raft' .*\n  they look like a "
                       r"checkpoint of model 'raft-small' \(every key and shape matches\): create 'raft-small' "
                       r"instead \(-m raft-small on the command line\)\n  missing \(103\): .*, \.\.\. \(99 more\)"):
        cvflow.create("raft", weights=w)
    assert cvflow.create("raft-small", weights=w).getDefaultName()


def test_wrong_checkpoint_message_is_short(capsys):
    shared = ROOT.parent / "shared"
    ckpt, frame = shared / "weights" / "raft-small.pth", shared / "data" / "sintel_market_2" / "frame_0016.png"
    if not ckpt.is_file():
        pytest.skip(f"RAFT-small checkpoint not found at {ckpt} (../shared beside the project)")
    code, _, err = run(capsys, "flow", frame, frame, "-m", "raft", "--weights", ckpt, "-o", "/tmp/unused.flo")
    assert code == 2 and "they look like a checkpoint of model 'raft-small'" in err
    assert len(err) < 1500 and err.count("\n") <= 6, err
