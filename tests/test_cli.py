"""The command line: every subcommand's --help, outputs and error messages (exit status 2)."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

import cvflow
from cvflow.cli import main
from cvflow.models.base import REGISTRY, ModelDef, register
from test_eval import make_chairs
from test_video import make_video

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
RAFT_SMALL = SHARED / "weights" / "raft-small.pth"
SINTEL = SHARED / "data" / "sintel_market_2"
COMMANDS = ["flow", "video", "eval", "convert", "viz", "models"]


def _shapes(config):
    return {"flow": (2,)}


def _forward(params, img0, img1, config, options, init_flow):
    out = np.broadcast_to(params["flow"] * options["iters"], img0.shape[:2] + (2,)).astype(np.float32)
    return out if init_flow is None else out + init_flow


@pytest.fixture(autouse=True, scope="module")
def cli_model():
    model = register(ModelDef(name="test-cli", family="test", config={}, param_shapes=_shapes, forward=_forward,
                              options={"iters": 1, "warm_start": False}))
    yield model
    REGISTRY.pop(model.name, None)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "test-cli.npz"
    np.savez(path, flow=np.array([1.5, -0.5], np.float32))
    return str(path)


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    d = tmp_path_factory.mktemp("frames")
    rng = np.random.default_rng(1)
    for name in ("a.png", "b.png"):
        assert cv2.imwrite(str(d / name), rng.integers(0, 256, (20, 30, 3), dtype=np.uint8))
    return str(d / "a.png"), str(d / "b.png")


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


# -- help and parsing -----------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: cvflow {command}")


def test_top_level_help_lists_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert command in out


@pytest.mark.parametrize("argv, msg", [
    (["video", "x.mp4", "-m", "raft", "-o", "o", "--every", "0"], "--every: expected an integer >= 1, got 0"),
    (["video", "x.mp4", "-m", "raft", "-o", "o", "--max-side", "big"], "--max-side: expected an integer >= 1"),
    (["eval", "d", "--dataset", "things", "-m", "raft"], "--dataset: invalid choice: 'things'"),
    (["eval", "d", "--dataset", "chairs", "-m", "raft", "--limit", "-1"], "--limit: expected an integer >= 1"),
    (["viz", "f.flo", "-o", "x.png", "--max-flow", "-3"], "--max-flow: expected a positive finite number"),
    (["flow", "a", "b", "-m", "raft", "--iters", "0"], "--iters: expected an integer >= 1, got 0"),
    (["video", "x.mp4", "-o", "o"], "the following arguments are required: -m/--model"),
])
def test_bad_arguments_exit_2(argv, msg, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert msg in capsys.readouterr().err


def test_version_and_module_entry_point():
    res = subprocess.run([sys.executable, "-m", "cvflow", "--version"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip() == f"cvflow {cvflow.__version__}"
    res = subprocess.run([sys.executable, "-m", "cvflow", "viz", "missing.flo", "-o", "x.png"], cwd=ROOT,
                         capture_output=True, text=True)
    assert res.returncode == 2 and "cvflow viz: error: flow file not found: 'missing.flo'" in res.stderr


def test_models_lists_names(capsys):
    code, out, _ = run(capsys, "models")
    assert code == 0 and "test-cli" in out.split() and "raft-small" in out.split()


# -- flow and viz ---------------------------------------------------------------------


def test_flow_writes_flo_and_png(tmp_path, frames, weights, capsys):
    flo, png = tmp_path / "f.flo", tmp_path / "f.png"
    code, out, _ = run(capsys, "flow", *frames, "-m", "test-cli", "--weights", weights, "--iters", 2,
                       "--device", "cpu", "-o", flo, "--png", png)
    assert code == 0 and f"wrote {flo} (30x20, test-cli)" in out
    np.testing.assert_allclose(cvflow.readOpticalFlow(flo)[0, 0], [3.0, -1.0])
    assert cv2.imread(str(png)).shape == (20, 30, 3)


def test_flow_errors(tmp_path, frames, weights, capsys):
    code, _, err = run(capsys, "flow", frames[0], tmp_path / "none.png", "-m", "test-cli", "--weights", weights)
    assert code == 2 and "cvflow flow: error: no such image file:" in err
    code, _, err = run(capsys, "flow", *frames, "-m", "test-cli", "--weights", weights, "--opt", "iters")
    assert code == 2 and "--opt expects KEY=VALUE, got 'iters'" in err
    code, _, err = run(capsys, "flow", *frames, "-m", "nope", "--weights", weights)
    assert code == 2 and "unknown model 'nope'; valid models:" in err
    code, _, err = run(capsys, "flow", *frames, "-m", "test-cli", "--weights", weights, "-o", tmp_path / "f.flo",
                       "--png", tmp_path / "f.xyz")
    assert code == 2 and "error: --png" in err and "no image writer for its extension '.xyz'" in err


@pytest.fixture
def flo_file(tmp_path):
    flow = np.zeros((20, 30, 2), np.float32)
    flow[:, :, 0] = np.linspace(-3, 3, 30)
    path = tmp_path / "in.flo"
    cvflow.writeOpticalFlow(path, flow)
    return path, flow


def test_viz_writes_color_png(tmp_path, flo_file, capsys):
    path, flow = flo_file
    code, out, _ = run(capsys, "viz", path, "-o", tmp_path / "c.png", "--max-flow", 3)
    assert code == 0 and f"wrote {tmp_path / 'c.png'} (30x20)" in out
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "c.png")), cvflow.flow_to_color(flow, max_flow=3))


def test_viz_panel_with_image(tmp_path, flo_file, frames, capsys):
    path, flow = flo_file
    code, out, _ = run(capsys, "viz", path, "-o", tmp_path / "p.png", "--image", frames[0])
    assert code == 0
    panel = cv2.imread(str(tmp_path / "p.png"))
    assert panel.shape == (20, 60, 3)
    np.testing.assert_array_equal(panel[:, :30], cv2.imread(frames[0]))


def test_viz_errors(tmp_path, flo_file, capsys):
    path, _ = flo_file
    code, _, err = run(capsys, "viz", tmp_path / "none.flo", "-o", tmp_path / "x.png")
    assert code == 2 and "cvflow viz: error: flow file not found:" in err
    (tmp_path / "bad.flo").write_bytes(b"nope" * 10)
    code, _, err = run(capsys, "viz", tmp_path / "bad.flo", "-o", tmp_path / "x.png")
    assert code == 2 and "bad .flo magic" in err
    code, _, err = run(capsys, "viz", path, "-o", tmp_path / "x.unknown")
    assert code == 2 and "no image writer for its extension '.unknown' (use .png, .jpg, ...)" in err
    code, _, err = run(capsys, "viz", path, "-o", tmp_path / "no" / "dir" / "x.png")
    assert code == 2 and "does not exist" in err
    big = tmp_path / "big.png"
    cv2.imwrite(str(big), np.zeros((21, 30, 3), np.uint8))
    code, _, err = run(capsys, "viz", path, "-o", tmp_path / "x.png", "--image", big)
    assert code == 2 and "is 30x21 but the flow" in err and "is 30x20; they must match" in err
    code, _, err = run(capsys, "viz", path, "-o", tmp_path / "x.png", "--image", tmp_path / "none.png")
    assert code == 2 and "no such image file" in err


# -- video ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("v") / "in.mp4", n=4, h=64, w=80)


def test_video_flo_and_mp4(tmp_path, video, weights, capsys):
    out_dir = tmp_path / "out"
    code, out, _ = run(capsys, "video", video, "-m", "test-cli", "--weights", weights, "-o", out_dir,
                       "--no-progress", "--device", "cpu")
    assert code == 0
    assert f"wrote 3 pairs (80x64, test-cli) to {out_dir}: .flo files and flow.mp4" in out and "pairs/s" in out
    assert sorted(p.name for p in out_dir.iterdir()) == ["flow.mp4"] + [f"flow_{k:06d}.flo" for k in range(3)]
    # warm start is on by default: the test model adds its constant to the previous flow
    np.testing.assert_allclose(cvflow.readOpticalFlow(out_dir / "flow_000002.flo")[0, 0], [4.5, -1.5])


def test_video_npz_no_warm_start_every_max_side(tmp_path, video, weights, capsys):
    code, out, _ = run(capsys, "video", video, "-m", "test-cli", "--weights", weights, "-o", tmp_path,
                       "--npz", "--no-mp4", "--no-warm-start", "--every", 2, "--max-side", 40, "--iters", 2)
    assert code == 0 and "wrote 1 pair (40x32, test-cli)" in out and "flow.npz" in out and "mp4" not in out
    with np.load(tmp_path / "flow.npz") as data:
        assert data["flow"].shape == (1, 32, 40, 2)
        np.testing.assert_allclose(data["flow"][0, 0, 0], [3.0, -1.0])


def test_video_progress_on_stderr(tmp_path, video, weights, capsys):
    code, _, err = run(capsys, "video", video, "-m", "test-cli", "--weights", weights, "-o", tmp_path, "--no-mp4")
    assert code == 0 and "3/3" in err and "pairs/s" in err


def test_video_bad_inputs(tmp_path, weights, capsys):
    code, _, err = run(capsys, "video", tmp_path / "none.mp4", "-m", "test-cli", "--weights", weights,
                       "-o", tmp_path / "o")
    assert code == 2 and "cvflow video: error: no such video file:" in err
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(os.urandom(2000))
    code, _, err = run(capsys, "video", bad, "-m", "test-cli", "--weights", weights, "-o", tmp_path / "o")
    assert code == 2 and "cannot open video" in err and "corrupt" in err
    assert not (tmp_path / "o").exists()  # nothing created for a bad video


def test_video_interrupt_in_process(tmp_path, video, weights, capsys, monkeypatch):
    import cvflow.video as video_mod

    real = video_mod.run_video

    def interrupted_run(*args, **kwargs):
        def stop(k, flow):
            if k == 1:
                raise KeyboardInterrupt

        return real(*args, **kwargs, on_pair=stop)

    monkeypatch.setattr(video_mod, "run_video", interrupted_run)
    code, _, err = run(capsys, "video", video, "-m", "test-cli", "--weights", weights, "-o", tmp_path,
                       "--no-progress")
    assert code == 130
    assert f"cvflow video: interrupted after 2 pairs; their outputs in {tmp_path} are complete" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flow.mp4", "flow_000000.flo", "flow_000001.flo"]


@pytest.mark.slow
def test_video_sigint_subprocess(tmp_path):
    """A real Ctrl-C (SIGINT) to `python -m cvflow video` with RAFT-small: completed outputs stay readable."""
    if not RAFT_SMALL.is_file():
        pytest.skip(f"RAFT-small checkpoint not found at {RAFT_SMALL} (../shared beside the project)")
    src = make_video(tmp_path / "tiny.mp4", n=80, h=128, w=128)
    out_dir = tmp_path / "out"
    cmd = [sys.executable, "-m", "cvflow", "video", str(src), "-m", "raft-small", "--weights", str(RAFT_SMALL),
           "--iters", "2", "--device", "cpu", "-o", str(out_dir), "--npz"]
    # SIG_DFL in the child, so Python installs its KeyboardInterrupt handler even if our SIGINT is ignored.
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        # the progress bar is on stderr; wait for the first pair to be reported, then interrupt
        line = ""
        while time.monotonic() < deadline and proc.poll() is None:
            line += proc.stderr.read(1)
            if re.search(r"\b[1-9]\d*/79\b", line):  # tqdm may skip counts between refreshes
                break
        assert proc.poll() is None, "finished before the interrupt"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "cvflow video: interrupted after" in err
    done = int(err.split("interrupted after ")[1].split()[0])
    assert 1 <= done < 79, err
    assert sorted(p.name for p in out_dir.iterdir()) == ["flow.mp4", "flow.npz"]
    with np.load(out_dir / "flow.npz") as data:
        assert data["flow"].shape == (done, 128, 128, 2) and np.isfinite(data["flow"]).all()
        assert data["frame_index"].tolist() == [[k, k + 1] for k in range(done)]
    cap = cv2.VideoCapture(str(out_dir / "flow.mp4"))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    assert n == done


# -- eval -----------------------------------------------------------------------------


def test_eval_table_and_json_file(tmp_path, weights, capsys):
    make_chairs(tmp_path / "chairs", n=2)  # gt (0, 0), (0, 1)
    js = tmp_path / "r.json"
    code, out, _ = run(capsys, "eval", tmp_path / "chairs", "--dataset", "chairs", "-m", "test-cli",
                       "--weights", weights, "--json", js, "--no-progress", "--per-pair")
    assert code == 0
    assert out.startswith("chairs, test-cli, iters=1, warm_start=False\n")
    assert "mean (2 pairs)" in out and "00001" in out and f"wrote {js}" in out
    res = json.loads(js.read_text())
    assert res["dataset"] == "chairs" and res["model"] == "test-cli" and res["pairs"] == 2
    expected = np.mean([np.hypot(1.5, 0.5), np.hypot(1.5, 1.5)])
    assert res["epe"] == pytest.approx(expected, rel=1e-6)
    assert set(res) >= {"epe", "1px", "3px", "5px", "pairs_per_s", "seconds", "per_pair", "options", "device"}


def test_eval_json_stdout_limit(tmp_path, weights, capsys):
    make_chairs(tmp_path, n=3)
    code, out, err = run(capsys, "eval", tmp_path, "--dataset", "chairs", "-m", "test-cli", "--weights", weights,
                         "--json", "-", "--limit", 2)
    assert code == 0
    assert json.loads(out)["pairs"] == 2  # stdout is pure JSON
    assert "mean (2 pairs)" in err and "pairs/s" in err


def test_eval_errors(tmp_path, weights, capsys):
    code, _, err = run(capsys, "eval", tmp_path, "--dataset", "kitti", "-m", "test-cli", "--weights", weights)
    assert code == 2 and "cvflow eval: error: no kitti pairs found under" in err and "flow_occ" in err
    code, _, err = run(capsys, "eval", tmp_path / "nope", "--dataset", "sintel", "-m", "test-cli")
    assert code == 2 and "dataset root is not a directory" in err
    make_chairs(tmp_path, n=1)
    code, _, err = run(capsys, "eval", tmp_path, "--dataset", "chairs", "-m", "test-cli", "--weights", weights,
                       "--json", tmp_path / "no" / "r.json", "--no-progress")
    assert code == 2 and "error: --json" in err and "/no does not exist" in err


# -- convert --------------------------------------------------------------------------


def test_convert_raft_small(tmp_path, capsys):
    if not RAFT_SMALL.is_file():
        pytest.skip(f"RAFT-small checkpoint not found at {RAFT_SMALL} (../shared beside the project)")
    dst = tmp_path / "raft-small.npz"
    code, out, _ = run(capsys, "convert", RAFT_SMALL, dst, "-m", "raft-small")
    assert code == 0 and f"wrote {dst}" in out and "tensors" in out
    with np.load(dst) as data:
        assert len(data.files) > 50
