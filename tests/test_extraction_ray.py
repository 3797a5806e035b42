"""cvflow.extract, engine ray, on a real Ray instance started once for this module (2 CPUs,
loopback only, no dashboard): same table as the local engine, interruption and rerun,
an actor killed mid-clip, a corrupt file."""
from __future__ import annotations

import collections
import os
import signal
import threading
import time

import pytest

from test_extraction import (RAFT_SMALL, assert_no_temporaries, make_clip, make_corrupt, read_table,
                             synthetic_raft_small)

# Ray binds to the machine's network address unless told it is not a cluster node; then it
# uses 127.0.0.1 for everything (GCS, raylet, workers). Must be set before ray is imported.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
ray = pytest.importorskip("ray", reason="Ray not installed (pip install '.[ray]')")
pytest.importorskip("ray.data", reason="Ray Data not installed (pip install '.[ray]')")

from cvflow.extraction import ExtractInterrupted, extract  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")  # Ray's own


@pytest.fixture(scope="module", autouse=True)
def ray_instance():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Four tiny clips moving by known shifts, a longer one, and a corrupt file."""
    root = tmp_path_factory.mktemp("clips")
    for i, (dx, dy) in enumerate([(1, 0), (0, 2), (2, 2), (-2, 1)]):
        make_clip(root / f"c{i}.mp4", n=3, dx=dx, dy=dy, seed=i)
    make_clip(root / "long.mp4", n=8, dx=1, dy=1, seed=9)
    make_corrupt(root / "bad.mp4")
    return root


KEYS = ["bad.mp4", "c0.mp4", "c1.mp4", "c2.mp4", "c3.mp4", "long.mp4"]
FAST = {"iters": 2}  # synthetic weights: the model's accuracy does not matter here


@pytest.fixture(scope="module")
def weights():
    return synthetic_raft_small()


def without_seconds(rows):
    return {k: {c: v for c, v in r.items() if c != "seconds"} for k, r in rows.items()}


def test_ray_and_local_give_the_same_table(clips, tmp_path):
    if not RAFT_SMALL.is_file():
        pytest.skip(f"RAFT-small checkpoint not found at {RAFT_SMALL} (../shared beside the project)")
    # the same threads on both sides: BLAS's thread count moves float32 rounding (7.6e-6 px)
    kw = dict(weights=str(RAFT_SMALL), save="both", progress=False, threads=1)
    local = extract(clips, tmp_path / "local", "raft-small", **kw)
    remote = extract(clips, tmp_path / "ray", "raft-small", engine="ray", workers=2, **kw)
    assert (local["computed"], remote["computed"], remote["errors"]) == (6, 6, 1)
    a, b = read_table(tmp_path / "local"), read_table(tmp_path / "ray")
    assert sorted(b) == KEYS
    # NaN != NaN: compare the error row's numbers by their text
    assert repr(without_seconds(a)) == repr(without_seconds(b))
    for key in KEYS[1:]:
        assert (tmp_path / "ray" / b[key]["flow_file"]).read_bytes() == \
            (tmp_path / "local" / a[key]["flow_file"]).read_bytes()
    assert b["c2.mp4"]["mag_median"] == pytest.approx(2 ** 1.5, abs=0.35)  # shift (2, 2): 2.83 px
    assert b["bad.mp4"]["status"] == "error" and "cannot open video" in b["bad.mp4"]["error"]
    assert_no_temporaries(tmp_path / "ray")


def test_interrupted_then_rerun_does_each_clip_once(clips, tmp_path, weights):
    done = []

    def stop_after_two(row):
        done.append(row)
        if len(done) == 2:
            raise KeyboardInterrupt

    kw = dict(weights=weights, options=FAST, engine="ray", workers=2, progress=False)
    with pytest.raises(ExtractInterrupted):
        extract(clips, tmp_path / "out", "raft-small", on_row=stop_after_two, **kw)
    first = read_table(tmp_path / "out")
    # the two rows handed over, and any clip finished meanwhile whose row had not reached the driver yet
    assert {r["path"] for r in done} <= set(first)
    n = len(first)
    res = extract(clips, tmp_path / "out", "raft-small", on_row=done.append, **kw)
    redone = sum(r["status"] == "error" for r in first.values())  # a failed clip is tried again
    assert (res["computed"], res["skipped"]) == (6 - n + redone, n - redone)
    recovered = [k for k, r in first.items() if r["status"] == "ok" and k not in {r["path"] for r in done[:2]}]
    counts = collections.Counter(r["path"] for r in done if r["status"] == "ok") + collections.Counter(recovered)
    assert sorted(counts) == KEYS[1:] and set(counts.values()) == {1}  # no good clip computed twice
    final = read_table(tmp_path / "out")
    assert sorted(final) == KEYS
    for key, row in first.items():
        if row["status"] == "ok":
            assert final[key] == row  # kept, not recomputed
    deadline = time.monotonic() + 30  # the actors of both runs are gone (released asynchronously)
    while ray.available_resources().get("CPU") != 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray.available_resources().get("CPU") == 2


def test_actor_killed_mid_clip_is_retried(clips, tmp_path, weights):
    """SIGKILL the actor while its clip's archive is being written: Ray restarts it, the clip is redone."""
    out = tmp_path / "out"
    killed = []
    stop = threading.Event()

    def kill_first_worker():
        while not stop.is_set():
            for tmp in out.glob("flow/*/.tmp-*.raw"):  # .tmp-<pid>-<name>.raw: a clip part-way
                pid = int(tmp.name.split("-")[1])
                os.kill(pid, signal.SIGKILL)
                killed.append((pid, tmp.name))
                return
            time.sleep(0.01)

    killer = threading.Thread(target=kill_first_worker, daemon=True)
    killer.start()
    try:
        res = extract(clips, out, "raft-small", weights=weights, options=FAST, save="both", engine="ray",
                      workers=1, progress=False)
    finally:
        stop.set()
        killer.join()
    assert killed, "no worker was seen mid-clip"
    pid, name = killed[0]
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert (res["computed"], res["errors"]) == (6, 1)
    rows = read_table(out)
    assert sorted(rows) == KEYS
    assert [rows[k]["status"] for k in KEYS] == ["error"] + ["ok"] * 5
    assert rows["long.mp4"]["pairs"] == 7
    archives = sorted(p.name for p in out.rglob("*.npz"))
    assert len(archives) == 5 and len(set(archives)) == 5
    assert any(name.startswith(f".tmp-{pid}-{a}") for a in archives)  # the killed clip was completed
    assert_no_temporaries(out)


def test_corrupt_file_is_an_error_row(clips, tmp_path, weights):
    (tmp_path / "list.txt").write_text(f"{clips / 'bad.mp4'}\n{clips / 'c0.mp4'}\n{tmp_path / 'missing.mp4'}\n")
    res = extract(tmp_path / "list.txt", tmp_path / "out", "raft-small", weights=weights, options=FAST,
                  engine="ray", workers=1, progress=False)
    assert (res["computed"], res["errors"]) == (3, 2)
    rows = read_table(tmp_path / "out")
    bad, missing, good = (rows[str(p)] for p in (clips / "bad.mp4", tmp_path / "missing.mp4", clips / "c0.mp4"))
    assert bad["status"] == "error" and bad["error"].startswith(f"cannot open video {clips / 'bad.mp4'}")
    assert missing["status"] == "error" and missing["error"] == f"no such video file: {tmp_path / 'missing.mp4'}"
    assert good["status"] == "ok" and good["pairs"] == 2 and good["error"] == ""



def test_a_clip_whose_worker_keeps_dying_becomes_an_error_row(clips, tmp_path, weights):
    """Kill every attempt at one clip: after MAX_DEATHS deaths it is an error row, and the run ends."""
    from cvflow.extraction.ray_engine import MAX_DEATHS

    (tmp_path / "list.txt").write_text(f"{clips / 'long.mp4'}\n{clips / 'c0.mp4'}\n")
    out = tmp_path / "out"
    killed = []
    stop = threading.Event()

    def kill_every_attempt():
        while not stop.is_set():
            for tmp in out.glob("flow/*/.tmp-*-long.mp4-*.raw"):
                pid = int(tmp.name.split("-")[1])
                if pid not in killed:
                    killed.append(pid)
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            time.sleep(0.01)

    killer = threading.Thread(target=kill_every_attempt, daemon=True)
    killer.start()
    try:
        res = extract(tmp_path / "list.txt", out, "raft-small", weights=weights, options=FAST, save="flow",
                      engine="ray", workers=1, progress=False)
    finally:
        stop.set()
        killer.join()
    assert len(killed) == MAX_DEATHS
    assert (res["computed"], res["errors"]) == (2, 1)
    rows = read_table(out)
    bad = rows[str(clips / "long.mp4")]
    assert bad["status"] == "error" and bad["error"].startswith(f"the worker died {MAX_DEATHS} times")
    assert rows[str(clips / "c0.mp4")]["status"] == "ok"
    assert not (out / ".attempts").exists()
    assert_no_temporaries(out)
