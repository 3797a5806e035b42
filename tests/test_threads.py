"""`threads=` on `create` and `--threads` on the commands: BLAS (read through threadpoolctl),
cvflow's own pool and OpenCV are bounded during each call, and restored after it."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

import cvflow
from cvflow.backends import threads as thread_limits
from cvflow.errors import CvflowTypeError, InputError
from cvflow.extraction.run import thread_share
from cvflow.models.base import REGISTRY
from cvflow.ops import parallel


def _blas():
    """The thread count of every BLAS pool loaded in the process."""
    return sorted({lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"})


@pytest.fixture(scope="module")
def weights():
    cvflow.list_models()
    rng = np.random.default_rng(0)
    shapes = REGISTRY["raft-small"].param_shapes(REGISTRY["raft-small"].config)
    return {k: (rng.standard_normal(s) * 0.05).astype(np.float32) for k, s in shapes.items()}


def _recorded(algo, calls):
    """Make every conv2d of `algo` record (BLAS threads, cvflow's pool, OpenCV threads) mid-pass."""
    be = algo._backend
    conv = type(be).conv2d

    def conv2d(*args, **kwargs):
        calls.append((tuple(_blas()), parallel.workers(), cv2.getNumThreads()))
        return conv(be, *args, **kwargs)

    be.conv2d = conv2d


# Several threads on a loaded machine are the slow case this guards against: one small call.
@pytest.mark.parametrize("threads", [1, 2])
def test_threads_bound_every_pool_during_each_call_and_are_restored(weights, threads):
    frame = np.random.default_rng(1).integers(0, 256, (128, 136, 3), dtype=np.uint8)
    with threadpool_limits(limits=3, user_api="blas"):  # the caller's own setting, kept outside calls
        cv2_before = cv2.getNumThreads()
        algo = cvflow.create("raft-small", weights=weights, device="cpu", iters=1, threads=threads)
        assert algo.threads == threads
        calls = []
        _recorded(algo, calls)
        algo.calc(frame, frame, None)
        if threads == 1:
            algo.calcBidirectional(frame, frame)
            algo.calc_batch([frame], [frame])
        assert len(calls) > 10
        # OpenCV at one thread: its calls inside a pass are split by cvflow's pool (an
        # idle OpenCV worker spins with sched_yield against the pool's threads)
        assert set(calls) == {((threads,), min(threads, parallel.MAX_WORKERS), 1)}
        assert _blas() == [3] and cv2.getNumThreads() == cv2_before
        assert parallel.workers() == min(parallel.default_threads(), parallel.MAX_WORKERS)


def test_threads_bound_create_warm_up_pass(weights, monkeypatch):
    seen = []
    real = thread_limits.limited

    def spy(n):
        seen.append(n)
        return real(n)

    monkeypatch.setattr(thread_limits, "limited", spy)
    cvflow.create("raft-small", weights=weights, device="cpu", iters=1, threads=1)
    assert seen == [1]  # the warm-up forward pass of create() ran under the limit


def test_default_threads_are_the_cores_this_process_may_use(weights, monkeypatch):
    monkeypatch.delenv("CVFLOW_NUM_THREADS", raising=False)
    import os

    assert parallel.default_threads() == parallel.cores() == len(os.sched_getaffinity(0))
    monkeypatch.setattr(parallel, "cores", lambda: 1)
    calls = []
    algo = cvflow.create("raft-small", weights=weights, device="cpu", iters=1)
    assert algo.threads is None
    _recorded(algo, calls)
    algo.calc(*[np.zeros((128, 128, 3), np.uint8)] * 2)
    assert set(calls) == {((1,), 1, 1)}
    monkeypatch.setenv("CVFLOW_NUM_THREADS", "1")
    assert parallel.default_threads() == 1


@pytest.mark.parametrize("bad, err, match", [
    (0, InputError, r"`threads` must be an int >= 1 or None, got 0"),
    (-2, InputError, r"`threads` must be an int >= 1 or None, got -2"),
    (1.5, CvflowTypeError, r"`threads` must be an int >= 1 or None, got 1.5 \(float\)"),
    ("2", CvflowTypeError, r"`threads` must be an int >= 1 or None, got '2' \(str\)"),
    (True, CvflowTypeError, r"`threads` must be an int >= 1 or None, got True \(bool\)"),
])
def test_bad_threads_are_refused_before_loading(bad, err, match):
    with pytest.raises(err, match=match):
        cvflow.create("raft-small", weights="/nonexistent.pth", device="cpu", threads=bad)


def test_numpy_integers_are_accepted():
    assert thread_limits.check_threads(np.int64(2)) == 2 and thread_limits.check_threads(None) is None


def test_pool_limit_nests_and_restores():
    with parallel.limited(3):
        assert parallel.workers() == 3
        with parallel.limited(1):
            assert parallel.workers() == 1
            assert parallel.run(lambda i: i, range(4)) == [0, 1, 2, 3]
        assert parallel.workers() == 3
        got = parallel.map_spans(lambda a, b: (a, b), 500, 1, chunk=64)
        assert {0, 166, 333} <= {a for a, _ in got} and max(b - a for a, b in got) <= 64  # 3 shares
        assert [a for a, _ in got[1:]] == [b for _, b in got[:-1]] and got[-1][1] == 500


def test_extract_thread_shares(monkeypatch):
    monkeypatch.setattr(parallel, "cores", lambda: 8)
    assert thread_share("local", 1, None) is None          # the whole process: create's default
    assert thread_share("local", 1, 3) == 3
    assert thread_share("ray", 3, None) == 2                # 8 cores // 3 actors
    assert thread_share("ray", 16, None) == 1
    assert thread_share("ray", 4, 2) == 2
    assert thread_share("ray", 4, 4, address="auto") == 4   # a cluster: Ray places actors by num_cpus
    assert thread_share("ray", 4, None, address="auto") == 1
    with pytest.raises(InputError, match=r"`workers` x `threads` \(3 x 3\) exceeds the 8 cores"):
        thread_share("ray", 3, 3)


def test_extract_refuses_bad_threads(tmp_path):
    from cvflow.extraction import extract

    with pytest.raises(InputError, match=r"`threads` must be an int >= 1 or None, got 0"):
        extract(tmp_path, tmp_path / "out", "raft-small", threads=0)


@pytest.mark.parametrize("command, extra", [("flow", ["a.png", "b.png"]), ("video", ["v.mp4", "-o", "o"]),
                                            ("eval", ["root", "--dataset", "chairs"]),
                                            ("extract", ["in", "-o", "o"])])
def test_every_model_command_takes_threads(command, extra):
    from cvflow.cli import build_parser

    args = build_parser().parse_args([command, *extra, "-m", "raft-small", "--threads", "2"])
    assert args.threads == 2
    assert build_parser().parse_args([command, *extra, "-m", "raft-small"]).threads is None


def test_cli_threads_reach_create_and_bad_values_exit_2(monkeypatch, tmp_path, capsys):
    from cvflow import cli

    made = {}

    def fake_create(name, **kw):
        made.update(kw)
        raise InputError("stop here")

    monkeypatch.setattr(cvflow, "create", fake_create)
    frame = tmp_path / "a.png"
    cv2.imwrite(str(frame), np.zeros((16, 16, 3), np.uint8))
    assert cli.main(["flow", str(frame), str(frame), "-m", "raft-small", "--threads", "1"]) == 2
    assert made["threads"] == 1
    with pytest.raises(SystemExit) as stop:
        cli.main(["flow", str(frame), str(frame), "-m", "raft-small", "--threads", "0"])
    assert stop.value.code == 2
    assert "--threads: expected an integer >= 1, got 0" in capsys.readouterr().err
