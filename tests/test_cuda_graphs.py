"""CUDA graphs on the emulator: the executor's capture records its calls and replays
them; whatever a real stream capture refuses (array ops outside the executor, host<->
device copies, syncs, new buffers once a graph of the pool was replayed) raises."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import randn

from cvflow.backends.cuda import k_conv
from cvflow.backends.cuda.backend import CudaBackend, GraphWarning
from cvflow.backends.cuda.executor import GraphPool
from cvflow.errors import DeviceError


def _pass(ex, layer):
    def fn(x):
        y = k_conv.conv2d(ex, x, layer, padding=1, act="relu")
        return k_conv.conv2d(ex, y, layer, padding=1, act="leaky")
    return fn


@pytest.fixture
def layer(ex):
    rng = np.random.default_rng(0)
    return k_conv.prepare_conv(ex, randn(rng, 3, 3, 3, 3), randn(rng, 3))


def test_replay_with_new_inputs_equals_eager_bit_for_bit(ex, layer):
    rng = np.random.default_rng(1)
    be = CudaBackend(ex)
    fn = _pass(ex, layer)
    for _ in range(3):
        x = ex.asarray(randn(rng, 1, 9, 11, 3))
        eager = ex.to_host(fn(x))
        with ex.tracer.record() as c:
            got = ex.to_host(be.graphed(("toy", x.shape), fn, x))
        np.testing.assert_array_equal(got, eager)
    assert len(be._graphs) == 1 and c.launches == {} and c.allocs == 0  # a replay: no launch, no buffer
    assert dict(c.ops) == {"setitem": 1}  # the input copied into the static buffer
    graph = be._graphs[("toy", (1, 9, 11, 3))][0]
    assert graph.nodes == 6  # per conv: im2col, product, bias+act


@pytest.mark.parametrize("breach, message", [
    (lambda ex, x: x + 1, "array op 'add' outside the executor"),
    (lambda ex, x: ex.asarray(np.ones(3)), "host->device copy"),
    (lambda ex, x: ex.to_host(x), "to_host inside the captured pass"),
    (lambda ex, x: float(x[0, 0, 0, 0]), r"float\(\) of a device value"),
    (lambda ex, x: ex.synchronize(), r"synchronize\(\) inside the captured pass"),
    (lambda ex, x: x.copy(), "array op 'copy'"),
])
def test_a_capture_that_breaks_the_rules_fails_loudly(ex, layer, breach, message):
    x = ex.asarray(np.ones((1, 4, 4, 3)))
    with pytest.raises(DeviceError, match=message):
        with ex.capture():
            _pass(ex, layer)(x)
            breach(ex, x)
    assert not ex.tracer.capturing and ex.tracer.recorder is None
    x + 1  # outside a capture ops run again


def test_no_new_buffer_once_a_graph_of_the_pool_was_replayed(ex, layer):
    x = ex.asarray(np.ones((1, 4, 4, 3)))
    pool = GraphPool()
    with ex.capture(pool) as first:
        _pass(ex, layer)(x)
    with ex.capture(pool):
        _pass(ex, layer)(x)                     # before any replay: buffers may still be made
    first.graph.replay()
    with pytest.raises(DeviceError, match="new .*-byte buffer after the graph's first replay"):
        with ex.capture(pool):
            _pass(ex, layer)(x)
    with ex.capture():                          # a fresh pool may allocate
        _pass(ex, layer)(x)


def test_a_pass_that_cannot_be_captured_runs_eagerly_with_one_warning(ex, layer):
    be = CudaBackend(ex)
    conv = _pass(ex, layer)

    def fn(x):
        return conv(x) * np.float32(2)          # an array op: no graph can hold it

    x = ex.asarray(np.ones((1, 5, 5, 3)))
    want = ex.to_host(fn(x))
    with pytest.warns(GraphWarning, match="CUDA graph capture failed, running eagerly"):
        got = be.graphed("k", fn, x)
    np.testing.assert_array_equal(ex.to_host(got), want)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(ex.to_host(be.graphed("k", fn, x)), want)
        np.testing.assert_array_equal(ex.to_host(be.graphed("k2", fn, x)), want)
