"""Ctrl-C in `cvflow extract` (engines local and ray): every clip whose archive is complete
on disk is in the table, and a rerun recomputes nothing finished.

Each case starts `python -m cvflow extract` in its own session and sends SIGINT to the
whole process group, as a terminal's Ctrl-C does (Ray's processes included), at a
moment tied to the run's progress: before the first archive, as it appears, a little
after, and after several.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import cvflow
from test_extraction import make_clip, make_corrupt, read_table, synthetic_raft_small

ROOT = Path(__file__).resolve().parents[1]
N_CLIPS = 8


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("interrupt")
    clips = root / "clips"
    clips.mkdir()
    for i in range(N_CLIPS):
        make_clip(clips / f"c{i}.mp4", n=4, h=48, w=64, dx=1 + i % 3, dy=i % 2, seed=i)
    make_corrupt(clips / "bad.mp4")
    weights = root / "raft-small-synthetic.npz"
    cvflow.save_converted(synthetic_raft_small(), weights)
    return clips, weights


def _command(clips, weights, out, engine):
    cmd = [sys.executable, "-m", "cvflow", "extract", str(clips), "-o", str(out), "-m", "raft-small",
           "--weights", str(weights), "--iters", "2", "--save", "both", "--no-progress", "--engine", engine]
    return cmd + (["--workers", "2"] if engine == "ray" else [])


def _env():
    # Ray on loopback only (no cluster), as tests/test_extraction_ray.py
    return {**os.environ, "PYTHONPATH": str(ROOT), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "CVFLOW_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


def _archives(out) -> dict[str, tuple]:
    """Complete archives on disk: relative path -> (inode, mtime_ns)."""
    found = {}
    for p in Path(out).rglob("*.npz"):
        if not p.name.startswith(".tmp-"):
            st = p.stat()
            found[p.relative_to(out).as_posix()] = (st.st_ino, st.st_mtime_ns)
    return found


def _interrupt(cmd, out, when, delay):
    """Run `cmd`, SIGINT its process group `delay` s after the run began (its settings file is
    written) and `when` archives exist; returns (exit status, stdout, stderr)."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline and \
            (not (out / "extract.json").is_file() or len(_archives(out)) < when):  # the run has begun
        time.sleep(0.01)
    time.sleep(delay)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=240)
    return proc.returncode, stdout, stderr


def _check_table_against_disk(out):
    rows = read_table(out)
    ok_files = {r["flow_file"] for r in rows.values() if r["status"] == "ok"}
    on_disk = set(_archives(out))
    assert on_disk <= ok_files, f"complete archives missing from the table: {sorted(on_disk - ok_files)}"
    assert ok_files <= on_disk, f"rows whose archive is not on disk: {sorted(ok_files - on_disk)}"
    return rows


# (archives that must exist, then seconds) before the SIGINT
POINTS = [(0, 1.0), (1, 0.0), (1, 0.4), (3, 0.1)]


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["local", "ray"])
@pytest.mark.parametrize("when,delay", POINTS, ids=[f"after{n}archives+{d}s" for n, d in POINTS])
def test_ctrl_c_keeps_every_complete_archive_in_the_table(setup, tmp_path, engine, when, delay):
    if engine == "ray":
        pytest.importorskip("ray.data", reason="Ray Data not installed (pip install '.[ray]')")
    clips, weights = setup
    out = tmp_path / "out"
    cmd = _command(clips, weights, out, engine)
    code, _, err = _interrupt(cmd, out, when, delay)
    assert code in (130, 1), err  # 1: the run ended (with the corrupt clip's error row) before the signal
    if code == 130:
        assert re.search(r"cvflow extract: (interrupted after \d+ clips?; .* holds every completed clip"
                         r"|interrupted)", err), err
    rows = _check_table_against_disk(out)
    finished = _archives(out)
    ok_before = {k for k, r in rows.items() if r["status"] == "ok"}

    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr  # the corrupt clip's error row
    m = re.search(r"(\d+) clips: (\d+) computed, (\d+) already done, (\d+) with errors", proc.stdout)
    assert m, proc.stdout
    total, computed, skipped, errors = map(int, m.groups())
    assert (total, skipped, computed, errors) == (N_CLIPS + 1, len(ok_before), N_CLIPS + 1 - len(ok_before), 1)
    after = _archives(out)
    for name, stamp in finished.items():  # nothing finished was written again
        assert after[name] == stamp, f"{name} was recomputed"
    rows = _check_table_against_disk(out)
    assert sum(r["status"] == "ok" for r in rows.values()) == N_CLIPS
    assert not list(out.rglob(".tmp-*")) and not (out / ".scores.jsonl").exists()


# -- the records a stopped run leaves, read back (fast, in-process) ----------------------------------


def test_complete_archives_carry_their_row_and_a_rerun_takes_them_back(setup, tmp_path):
    from cvflow.extraction import extract
    from cvflow.extraction.files import archive_row

    clips, weights = setup
    out = tmp_path / "out"
    kw = dict(weights=str(weights), options={"iters": 2}, save="both", progress=False)
    extract(clips, out, "raft-small", **kw)
    rows = read_table(out)
    for row in rows.values():
        if row["status"] == "ok":
            stored = archive_row(out / row["flow_file"])
            assert {k: v for k, v in stored.items() if k != "seconds"} == \
                {k: v for k, v in row.items() if k != "seconds"}
    finished = _archives(out)
    (out / "scores.parquet").unlink(missing_ok=True)  # as if the run was stopped before any row was written
    (out / "scores.csv").unlink(missing_ok=True)
    res = extract(clips, out, "raft-small", **kw)
    assert (res["computed"], res["skipped"], res["errors"]) == (1, N_CLIPS, 1)  # only the corrupt clip redone
    assert _archives(out) == finished
    _check_table_against_disk(out)


def test_rows_journalled_by_workers_are_taken_back(setup, tmp_path):
    from cvflow.extraction import extract
    from cvflow.extraction.files import journal_worker_row

    clips, weights = setup
    out = tmp_path / "out"
    kw = dict(weights=str(weights), options={"iters": 2}, save="score", progress=False)
    extract(clips, out, "raft-small", **kw)
    rows = read_table(out)
    (out / "scores.parquet").unlink(missing_ok=True)
    (out / "scores.csv").unlink(missing_ok=True)
    for key in ("c0.mp4", "c3.mp4"):  # a Ray run stopped: two rows only in a worker's journal
        journal_worker_row(out, rows[key])
    res = extract(clips, out, "raft-small", **kw)
    assert (res["computed"], res["skipped"]) == (N_CLIPS + 1 - 2, 2)
    assert read_table(out)["c0.mp4"] == rows["c0.mp4"]
    assert not (out / ".rows").exists()  # emptied once the table holds them
