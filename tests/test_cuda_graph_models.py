"""Whole passes as CUDA graphs, on the emulator: `calc` captures each (frame shape and
dtype, options, flags) once and replays it; the frames go up as uint8 and `be.frames`
normalises them in one kernel; the RAFT family's update stays within the dispatch budget
with no array op outside the executor (what a graph can hold).

GRAPH_MODELS lists the models whose pass is captured: replay with new frames equals the
eager pass bit for bit. A family joins by adding its names (the test then also proves
that its pass captures without a GraphWarning)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import cvflow
from cvflow.backends.cuda.backend import CudaBackend, GraphWarning
from cvflow.profiling import profile, random_weights

GRAPH_MODELS = ["raft", "raft-small", "searaft-s", "searaft-m", "searaft-l", "gmflow", "gmflow-refine", "neuflow2"]
_ITERS = {"raft": 2, "raft-small": 2, "searaft-s": 1, "searaft-m": 1, "searaft-l": 1}


def _pair(rng, h, w, shift=2):
    a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return a, np.roll(a, shift, axis=1)


def _objects(name):
    w = random_weights(name)
    opts = {"iters": _ITERS[name]} if name in _ITERS else {}
    graphed = cvflow.create(name, weights=w, device="cuda", **opts)
    eager = cvflow.create(name, weights=w, device="cuda", **opts)
    eager.use_graphs = False
    return graphed, eager


@pytest.mark.parametrize("name", GRAPH_MODELS)
def test_graph_replay_with_new_frames_equals_the_eager_pass_bit_for_bit(ex, name):
    rng = np.random.default_rng(7)
    graphed, eager = _objects(name)
    first = _pair(rng, 128, 136)
    with warnings.catch_warnings():
        warnings.simplefilter("error", GraphWarning)  # the pass must capture
        np.testing.assert_array_equal(graphed.calc(*first, None), eager.calc(*first, None))
        for shift in (1, 3):
            frames = _pair(rng, 128, 136, shift)
            with ex.tracer.record() as c:
                got = graphed.calc(*frames, None)
            np.testing.assert_array_equal(got, eager.calc(*frames, None))
            assert c.executor_calls == 0 and c.allocs <= 2 and c.h2d == 2  # a replay: the uint8 frames up
            assert c.h2d_bytes == 2 * 128 * 136 * 3
    graphs = graphed._backend._graphs
    assert len(graphs) == 1 and all(g is not None for g in graphs.values())


def test_bidirectional_gray_and_small_frames_replay_too(ex):
    rng = np.random.default_rng(8)
    graphed, eager = _objects("raft-small")
    for _ in range(2):
        a, b = _pair(rng, 100, 140)  # below the 128 px minimum: padded on the host, cropped after
        np.testing.assert_array_equal(graphed.calc(a, b, None), eager.calc(a, b, None))
        g0, g1 = a[..., 1], b[..., 1]  # gray: repeated by the frames kernel
        np.testing.assert_array_equal(graphed.calc(g0, g1, None), eager.calc(g0, g1, None))
        for x, y in zip(graphed.calcBidirectional(a, b), eager.calcBidirectional(a, b)):
            np.testing.assert_array_equal(x, y)
    assert len(graphed._backend._graphs) == 3 and None not in graphed._backend._graphs.values()


def test_a_pass_that_cannot_be_captured_runs_eagerly_with_one_warning(ex):
    """RAFT's warm start averages the caller's flow with array ops: no graph, one warning,
    the eager result."""
    rng = np.random.default_rng(9)
    graphed, eager = _objects("raft-small")
    a, b = _pair(rng, 128, 128)
    init = rng.standard_normal((128, 128, 2)).astype(np.float32)
    graphed.setFlags(cvflow.OPTFLOW_USE_INITIAL_FLOW)
    eager.setFlags(cvflow.OPTFLOW_USE_INITIAL_FLOW)
    with pytest.warns(GraphWarning, match="CUDA graph capture failed, running eagerly"):
        got = graphed.calc(a, b, init.copy())
    np.testing.assert_array_equal(got, eager.calc(a, b, init.copy()))
    with warnings.catch_warnings():
        warnings.simplefilter("error", GraphWarning)
        np.testing.assert_array_equal(graphed.calc(a, b, init.copy()), eager.calc(a, b, init.copy()))


# -- dispatch budget per update (dry profile) ----------------------------------------------
@pytest.mark.parametrize("name", ["raft", "raft-small"])
def test_raft_update_is_at_most_30_executor_calls_and_no_array_op(name):
    p = profile(name, 128, 160, {"iters": 2})  # from 128 px: no padding to the minimum size
    assert p.update.executor_calls <= 30 and p.update.other_ops == 0
    assert p.total.other_ops == 0 and p.total.h2d == 2 and p.total.h2d_bytes == 2 * 128 * 160 * 3  # uint8 frames


@pytest.mark.parametrize("name", ["searaft-s", "searaft-m"])
def test_searaft_pass_has_no_array_op(name):
    p = profile(name, 128, 160, {"iters": 2})  # from 128 px: no padding to the minimum size
    assert p.update.other_ops == 0
    # the pass itself has none; calc splits flow and uncertainty after it (two copies)
    assert set(p.total.ops) <= {"ascontiguousarray"} and p.total.ops["ascontiguousarray"] <= 2


# -- RAFT at 4K within 2 GiB -----------------------------------------------------------------
def test_raft_4k_twelve_updates_peak_live_bytes_within_2_gib():
    p = profile("raft", 2160, 3840, {"iters": 12}, dry=True)
    assert p.phases["encoders"].peak <= 2 << 30 and p.phases["update"].peak <= 2 << 30
    assert p.total.peak <= 2 << 30


def test_in_place_convolutions_give_the_same_flow_as_new_buffers(ex, monkeypatch):
    """The memory path of the 4K pass (residual blocks' conv2 written over conv1's output,
    chunk by chunk) on a small pair, with chunks small enough that every such conv runs
    in several: the flow equals the path with new output buffers bit for bit."""
    from cvflow.backends.cuda import k_conv

    monkeypatch.setattr(k_conv, "COL_BYTES", 96 << 10)
    rng = np.random.default_rng(10)
    a, b = _pair(rng, 128, 144)
    eager = cvflow.create("raft-small", weights=random_weights("raft-small"), device="cuda", iters=2)
    eager.use_graphs = False
    calls = []
    real = k_conv.conv2d_

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(k_conv, "conv2d_", spy)
    got = eager.calc(a, b, None)
    assert len(calls) > 0
    monkeypatch.setattr(CudaBackend, "conv2d_", lambda self, x, p, stride=1, padding=0, act=None:
                        self.conv2d(x, p, stride=stride, padding=padding, act=act))
    np.testing.assert_array_equal(got, eager.calc(a, b, None))
