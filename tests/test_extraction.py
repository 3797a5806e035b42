"""cvflow.extract, engine local: inputs, scores, archives, resume, faults; on small generated clips.

Ray itself is tested in test_extraction_ray.py; nothing here imports it.
"""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import cvflow
from cvflow.extraction import ExtractInterrupted, extract, make_settings
from cvflow.extraction.files import COLUMNS, ScoreTable, find_clips
from cvflow.models.base import REGISTRY, ModelDef, register
from cvflow.settings import weights_sha256

ROOT = Path(__file__).resolve().parents[1]
RAFT_SMALL = ROOT.parent / "shared" / "weights" / "raft-small.pth"

# -- helpers shared with test_extraction_ray.py ----------------------------------------------


def make_clip(path, n=4, h=64, w=96, dx=2, dy=0, seed=0):
    """A video (mp4v) of a smooth random texture moving by (dx, dy) px per frame: flow ~ (dx, dy)."""
    rng = np.random.default_rng(seed)
    m = 4 + n * max(abs(dx), abs(dy))
    tex = np.zeros((h + 2 * m, w + 2 * m, 3), np.float32)
    for s, amp in ((16, 1.0), (8, 0.7), (4, 0.5), (2, 0.3)):  # several scales, as natural images have
        small = rng.standard_normal(((h + 2 * m) // s + 2, (w + 2 * m) // s + 2, 3)).astype(np.float32)
        big = cv2.resize(small, (small.shape[1] * s, small.shape[0] * s), interpolation=cv2.INTER_CUBIC)
        tex += amp * big[:h + 2 * m, :w + 2 * m]
    tex = ((tex - tex.min()) / (tex.max() - tex.min()) * 255).astype(np.uint8)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (w, h))
    assert writer.isOpened()
    for i in range(n):
        y, x = m - i * dy, m - i * dx  # content at (x, y) in frame i is at (x + dx, y + dy) in frame i + 1
        writer.write(np.ascontiguousarray(tex[y:y + h, x:x + w]))
    writer.release()
    return path


def make_corrupt(path):
    Path(path).write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"not really a video" * 20)
    return path


def synthetic_raft_small(seed=0):
    """RAFT-small weights of the right keys and shapes, random: for tests where the model's accuracy does not matter."""
    from cvflow.api import get_model

    spec = get_model("raft-small")
    rng = np.random.default_rng(seed)
    return {k: (rng.standard_normal(s) * 0.1).astype(np.float32) for k, s in spec.param_shapes(spec.config).items()}


def read_table(out):
    return ScoreTable(out).load()


def assert_no_temporaries(out):
    left = [str(p) for p in Path(out).rglob(".tmp-*")]
    assert not left, f"temporary files left: {left}"


# -- a model with a known flow -----------------------------------------------------------------

GAIN = {"gain": np.array([3.0, -4.0], np.float32)}  # flow (3, -4) everywhere: magnitude 5


def _shapes(config):
    return {"gain": (2,)}


def _constant(params, img0, img1, config, options, init_flow):
    if config["fail_on"] is not None and int(img0[0, 0, 0]) == config["fail_on"]:
        raise MemoryError("pretend the clip does not fit")
    h, w = img0.shape[:2]
    return np.broadcast_to(np.asarray(params["gain"], np.float32), (h, w, 2)).copy()


@pytest.fixture(autouse=True, scope="module")
def const_model():
    spec = register(ModelDef(name="test-extract-const", family="test", config={"fail_on": None},
                             param_shapes=_shapes, forward=_constant, options={"iters": 1}))
    yield spec
    REGISTRY.pop(spec.name, None)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """3 videos (one in a subfolder), one frame folder, one corrupt file, and a file that is no clip."""
    root = tmp_path_factory.mktemp("clips")
    (root / "sub").mkdir()
    make_clip(root / "a.mp4", n=4, dx=1)
    make_clip(root / "sub" / "b.avi", n=5, dx=0, dy=2, seed=1)
    make_clip(root / "c.mp4", n=3, dx=2, dy=2, seed=2)
    make_corrupt(root / "bad.mp4")
    frames = root / "frames_d"
    frames.mkdir()
    for i in range(12):  # names sort as numbers: 2.png before 10.png
        cv2.imwrite(str(frames / f"{i}.png"), np.full((32, 48, 3), 10 * i, np.uint8))
    (root / "notes.txt").write_text("not a clip")
    return root


def run(clips, out, **kw):
    kw.setdefault("progress", False)
    return extract(clips, out, "test-extract-const", weights=GAIN, **kw)


# -- inputs -------------------------------------------------------------------------------------

def test_folder_clips_are_videos_and_frame_folders_recursively(clips):
    found = find_clips(clips)
    assert [(c["path"], c["kind"]) for c in found] == [
        ("a.mp4", "video"), ("bad.mp4", "video"), ("c.mp4", "video"), ("frames_d", "frames"),
        ("sub/b.avi", "video")]
    assert all(Path(c["source"]).is_absolute() for c in found)


def test_manifests_txt_csv_parquet_list_the_same_clips(clips, tmp_path):
    keys = ["a.mp4", "sub/b.avi", "frames_d"]
    (tmp_path / "m.txt").write_text("# clips\n" + "\n".join(str(clips / k) for k in keys) + "\n\n")
    (tmp_path / "m.csv").write_text("id,path\n" + "".join(f"{i},{clips / k}\n" for i, k in enumerate(keys)))
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table({"path": [str(clips / k) for k in keys]}), tmp_path / "m.parquet")
    expected = sorted(str(clips / k) for k in keys)
    for name in ("m.txt", "m.csv", "m.parquet"):
        found = find_clips(tmp_path / name)
        assert [c["path"] for c in found] == expected, name
        assert [c["kind"] for c in found] == ["video", "frames", "video"]
    # relative paths are read from the manifest's folder, and kept as written
    (clips / "rel.txt").write_text("a.mp4\nsub/b.avi\n")
    try:
        assert [(c["path"], c["source"]) for c in find_clips(clips / "rel.txt")] == [
            ("a.mp4", str(clips / "a.mp4")), ("sub/b.avi", str(clips / "sub" / "b.avi"))]
    finally:
        (clips / "rel.txt").unlink()


def test_bad_inputs_are_clear_errors(tmp_path):
    with pytest.raises(cvflow.CvflowFileNotFoundError, match="no such input folder or manifest: .*nope"):
        find_clips(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(cvflow.InputError, match="no videos .* or folders of images found under .*empty"):
        find_clips(tmp_path / "empty")
    (tmp_path / "clip.mp4").write_bytes(b"x")
    with pytest.raises(cvflow.InputError, match=r"must be a folder, or a manifest .* got a \.mp4 file"):
        find_clips(tmp_path / "clip.mp4")
    (tmp_path / "m.csv").write_text("file\na.mp4\n")
    with pytest.raises(cvflow.InputError, match=r"has no `path` column \(columns: \['file'\]\)"):
        find_clips(tmp_path / "m.csv")
    (tmp_path / "m.txt").write_text("# nothing\n")
    with pytest.raises(cvflow.InputError, match="lists no paths"):
        find_clips(tmp_path / "m.txt")


def test_argument_errors(clips, tmp_path):
    (tmp_path / "file").write_text("")
    cases = [({"engine": "spark"}, cvflow.InputError, "`engine` must be one of local, ray, got 'spark'"),
             ({"save": "all"}, cvflow.InputError, "`save` must be one of score, flow, both, got 'all'"),
             ({"workers": 0}, cvflow.InputError, "`workers` must be an int >= 1, got 0"),
             ({"gpus_per_worker": -1}, cvflow.InputError, "`gpus_per_worker` must be a number >= 0, got -1"),
             ({"every": 0}, cvflow.InputError, "`every` must be an int >= 1, got 0"),
             ({"on_row": 3}, cvflow.CvflowTypeError, "`on_row` must be callable, got int"),
             ({"workers": 2}, cvflow.InputError, "`address`, `workers` and `gpus_per_worker` are for engine 'ray'"),
             ({"address": "auto"}, cvflow.InputError, "for engine 'ray' .* got address='auto'")]
    for kw, err, msg in cases:
        with pytest.raises(err, match=msg):
            run(clips, tmp_path / "out", **kw)
    with pytest.raises(cvflow.OutputError, match="output .*file exists and is not a directory"):
        run(clips, tmp_path / "file")
    with pytest.raises(cvflow.ModelNotFoundError):
        extract(clips, tmp_path / "out", "no-such-model", progress=False)


# -- scores and archives ------------------------------------------------------------------------

def test_scores_of_a_known_flow_and_an_error_row(clips, tmp_path):
    res = run(clips, tmp_path / "out")
    assert res == {**res, "clips": 5, "computed": 5, "skipped": 0, "errors": 1, "engine": "local"}
    rows = read_table(tmp_path / "out")
    assert sorted(rows) == ["a.mp4", "bad.mp4", "c.mp4", "frames_d", "sub/b.avi"]
    settings, _ = make_settings("test-extract-const", GAIN)
    for key, pairs, (h, w) in (("a.mp4", 3, (64, 96)), ("sub/b.avi", 4, (64, 96)), ("frames_d", 11, (32, 48))):
        r = rows[key]
        assert (r["status"], r["error"], r["pairs"], r["height"], r["width"]) == ("ok", "", pairs, h, w)
        for stat in ("mean", "median", "p90"):
            assert r[f"mag_{stat}"] == pytest.approx(5.0)
            assert r[f"mag_{stat}_norm"] == pytest.approx(5.0 / math.hypot(h, w))
        assert (r["model"], r["fingerprint"], r["cvflow_version"], r["flow_file"]) == (
            "test-extract-const", settings["fingerprint"], cvflow.__version__, "")
        assert r["weights_sha256"] == settings["weights_sha256"] == weights_sha256(
            cvflow.create("test-extract-const", weights=GAIN, device="cpu"))
        assert r["seconds"] > 0
    bad = rows["bad.mp4"]
    assert bad["status"] == "error" and bad["pairs"] == 0 and math.isnan(bad["mag_mean"])
    assert "cannot open video" in bad["error"] and "bad.mp4" in bad["error"] and "corrupt" in bad["error"]
    assert json.loads((tmp_path / "out" / "extract.json").read_text())["fingerprint"] == settings["fingerprint"]
    assert not (tmp_path / "out" / ".scores.jsonl").exists()
    assert_no_temporaries(tmp_path / "out")


@pytest.mark.parametrize("save,fp16", [("flow", True), ("both", False)])
def test_flow_archives(clips, tmp_path, save, fp16):
    run(clips, tmp_path / "out", save=save, fp16=fp16, every=2, max_side=40)
    rows = read_table(tmp_path / "out")
    r = rows["sub/b.avi"]  # 5 frames, every 2: frames 0, 2, 4 -> 2 pairs; 96x64 -> 40x27
    assert (r["pairs"], r["height"], r["width"]) == (2, 27, 40)
    assert math.isnan(r["mag_mean"]) == (save == "flow")
    with np.load(tmp_path / "out" / r["flow_file"]) as z:
        assert z["flow"].dtype == (np.float16 if fp16 else np.float32) and z["flow"].shape == (2, 27, 40, 2)
        np.testing.assert_array_equal(z["flow"][..., 0], 3.0)
        np.testing.assert_array_equal(z["frame_index"], [[0, 2], [2, 4]])
        assert str(z["path"]) == "sub/b.avi" and str(z["fingerprint"]) == r["fingerprint"]
    assert rows["bad.mp4"]["flow_file"] == ""
    assert len(list((tmp_path / "out" / "flow").rglob("*.npz"))) == 4
    assert_no_temporaries(tmp_path / "out")


def test_a_clip_that_fails_mid_way_leaves_no_archive(clips, tmp_path, const_model):
    const_model.config["fail_on"] = 30  # frame 3 of frames_d (gray 30): its second pair fails
    try:
        run(clips, tmp_path / "out", save="flow")
    finally:
        const_model.config["fail_on"] = None
    r = read_table(tmp_path / "out")["frames_d"]
    assert r["status"] == "error" and r["error"] == "MemoryError: pretend the clip does not fit"
    assert len(list((tmp_path / "out" / "flow").rglob("*.npz"))) == 3
    assert_no_temporaries(tmp_path / "out")


# -- resume, interruption, settings ---------------------------------------------------------------

def test_interrupted_then_rerun_does_each_clip_once(clips, tmp_path):
    seen = []

    def stop_after_two(row):
        seen.append(row)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(ExtractInterrupted) as info:
        run(clips, tmp_path / "out", save="both", on_row=stop_after_two)
    assert info.value.summary["computed"] == 2
    first = read_table(tmp_path / "out")
    assert sorted(first) == ["a.mp4", "bad.mp4"] and not (tmp_path / "out" / ".scores.jsonl").exists()
    assert_no_temporaries(tmp_path / "out")
    res = run(clips, tmp_path / "out", save="both", on_row=seen.append)
    assert (res["computed"], res["skipped"]) == (4, 1)  # bad.mp4 failed: it is redone
    ok = sorted(r["path"] for r in seen if r["status"] == "ok")
    assert ok == ["a.mp4", "c.mp4", "frames_d", "sub/b.avi"]  # each good clip computed once
    final = read_table(tmp_path / "out")
    assert sorted(final) == ["a.mp4", "bad.mp4", "c.mp4", "frames_d", "sub/b.avi"]
    assert final["a.mp4"] == first["a.mp4"]  # not recomputed (same `seconds`, too)
    res = run(clips, tmp_path / "out", save="both")
    assert (res["computed"], res["skipped"], res["errors"]) == (1, 4, 1)


def test_a_deleted_archive_is_redone(clips, tmp_path):
    run(clips, tmp_path / "out", save="flow")
    rows = read_table(tmp_path / "out")
    (tmp_path / "out" / rows["c.mp4"]["flow_file"]).unlink()
    res = run(clips, tmp_path / "out", save="flow")
    assert (res["computed"], res["skipped"]) == (2, 3)  # c.mp4, and bad.mp4 (failed)
    assert (tmp_path / "out" / rows["c.mp4"]["flow_file"]).is_file()


def test_other_settings_are_refused_not_mixed(clips, tmp_path):
    run(clips, tmp_path / "out")
    with pytest.raises(cvflow.InputError, match=r"holds results made with other settings .*every 1 -> 2"):
        run(clips, tmp_path / "out", every=2)
    with pytest.raises(cvflow.InputError, match=r"other settings .*weights_sha256"):
        extract(clips, tmp_path / "out", "test-extract-const", weights={"gain": np.ones(2, np.float32)},
                progress=False)
    fingerprint = make_settings("test-extract-const", GAIN)[0]["fingerprint"]
    assert {r["fingerprint"] for r in read_table(tmp_path / "out").values()} == {fingerprint}


def test_rows_journalled_by_a_killed_driver_are_kept(clips, tmp_path):
    """A driver killed between clips leaves its rows in the journal (the last maybe cut short)."""
    out = tmp_path / "out"
    run(clips, out)
    rows = read_table(out)
    (out / "scores.parquet").unlink(missing_ok=True)
    (out / "scores.csv").unlink(missing_ok=True)
    lines = [json.dumps(rows[k]) for k in ("a.mp4", "c.mp4")]
    (out / ".scores.jsonl").write_text(lines[0] + "\n" + lines[1][:30])  # c.mp4's line cut short
    res = run(clips, out)
    assert (res["computed"], res["skipped"]) == (4, 1)
    assert sorted(read_table(out)) == ["a.mp4", "bad.mp4", "c.mp4", "frames_d", "sub/b.avi"]


def test_csv_table_without_pyarrow(clips, tmp_path, monkeypatch):
    import cvflow.extraction.files as io

    monkeypatch.setattr(io, "_pyarrow_parquet", lambda: None)
    res = run(clips, tmp_path / "out")
    assert res["table"].endswith("scores.csv") and not (tmp_path / "out" / "scores.parquet").exists()
    rows = read_table(tmp_path / "out")
    assert rows["a.mp4"]["pairs"] == 3 and rows["a.mp4"]["mag_median"] == pytest.approx(5.0)
    assert math.isnan(rows["bad.mp4"]["mag_mean"])
    assert list(rows["a.mp4"]) == list(COLUMNS)
    assert run(clips, tmp_path / "out")["skipped"] == 4


# -- Ray stays optional --------------------------------------------------------------------------

def test_engine_ray_without_ray_says_how_to_install(clips, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(cvflow.MissingDependencyError,
                       match=r"pip install 'ray\[data\]' pyarrow \(the extra `ray` of cvflow's distribution, cvflow-of\)"):
        run(clips, tmp_path / "out", engine="ray")
    assert not (tmp_path / "out").exists()


def test_import_and_local_cli_never_import_ray(clips, tmp_path):
    if not RAFT_SMALL.is_file():
        pytest.skip(f"RAFT-small checkpoint not found at {RAFT_SMALL} (../shared beside the project)")
    clip_dir = tmp_path / "clips"
    clip_dir.mkdir()
    shifts = {"s1.mp4": (1, 0), "s2.mp4": (0, -2), "s3.mp4": (2, 2)}
    for i, (name, (dx, dy)) in enumerate(shifts.items()):
        make_clip(clip_dir / name, n=3, dx=dx, dy=dy, seed=10 + i)
    code = ("import sys, cvflow, cvflow.cli, cvflow.extraction; assert 'ray' not in sys.modules\n"
            "rc = cvflow.cli.main(sys.argv[1:]); assert 'ray' not in sys.modules, 'ray imported'; sys.exit(rc)")
    argv = ["extract", str(clip_dir), "-o", str(tmp_path / "out"), "-m", "raft-small", "--weights",
            str(RAFT_SMALL), "--engine", "local", "--no-progress"]
    proc = subprocess.run([sys.executable, "-c", code, *argv], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "3 clips: 3 computed, 0 already done, 0 with errors" in proc.stdout
    rows = read_table(tmp_path / "out")
    for name, (dx, dy) in shifts.items():  # RAFT-small on tiny noise textures: within ~0.3 px
        assert rows[name]["mag_median"] == pytest.approx(math.hypot(dx, dy), abs=0.35), name


def test_cli_extract(clips, tmp_path, capsys, monkeypatch):
    from cvflow.cli import main

    cvflow.save_converted(GAIN, tmp_path / "gain.npz")
    argv = ["extract", str(clips), "-o", str(tmp_path / "out"), "-m", "test-extract-const", "--weights",
            str(tmp_path / "gain.npz"), "--save", "both", "--fp16", "--every", "2", "--no-progress"]
    assert main(argv) == 1  # the table has an error row (the corrupt clip): exit status 1
    out, err = capsys.readouterr()
    assert "5 clips: 5 computed, 0 already done, 1 with errors; wrote " in out
    assert re.search(r"cvflow extract: 1 clip failed \(status 'error' in .*scores\.\w+, reason in its `error` "
                     r"column\); a rerun retries them", err)
    assert main(argv) == 1
    assert "5 clips: 1 computed, 4 already done, 1 with errors" in capsys.readouterr().out
    assert main(argv[:-4] + ["--no-progress"]) == 2  # other settings: refused
    assert "holds results made with other settings" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "ray", None)
    assert main(argv + ["--engine", "ray", "--workers", "2"]) == 2
    assert "cvflow extract: error: engine 'ray' needs Ray Data" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(argv + ["--gpus-per-worker", "-1"])
    assert "expected a finite number >= 0, got '-1'" in capsys.readouterr().err


def test_cli_ctrl_c_exits_130_and_says_the_table_is_kept(clips, tmp_path, capsys, monkeypatch):
    import cvflow.extraction as extraction
    from cvflow.cli import main

    def interrupted(*args, **kw):
        raise ExtractInterrupted({"computed": 2, "table": str(tmp_path / "scores.parquet")})

    monkeypatch.setattr(extraction, "extract", interrupted)
    assert main(["extract", str(clips), "-o", str(tmp_path), "-m", "test-extract-const", "--no-progress"]) == 130
    assert "interrupted after 2 clips; " in capsys.readouterr().err
