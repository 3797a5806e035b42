"""The FlowNet family's pass on the CUDA backend (emulator): no array op outside the
executor, no host work, each weight held once on the device, and a pass that CUDA graphs
capture and replay bit for bit with new frames."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import cvflow
from cvflow.backends.cuda.backend import GraphWarning
from cvflow.profiling import frames, random_weights
from cvflow.testing import cuda_emulator

NAMES = ("flownets", "flownetc", "flownet2", "flownet2-c", "flownet2-cs", "flownet2-css", "flownet2-s", "flownet2-sd")
# Executor calls (kernel launches + products) of one flownet2 pass at 64x128, the budget the
# dispatch profile must stay within (measured 403: 289 launches, 114 products).
FLOWNET2_CALLS = 410


def _setup(ex, name):
    of = cvflow.create(name, weights=random_weights(name), device="cuda")
    be, model, params = of._backend, of._model, of._params

    def fn(a, b):
        return model.forward(params, a, b, model.config, of.options)
    return of, be, fn


def _device_pair(be, h, w, seed):
    return tuple(be.asarray(f.astype(np.float32)) for f in frames(h, w, seed))


@pytest.mark.parametrize("name", NAMES)
def test_graph_replay_with_new_frames_equals_eager_bit_for_bit(name):
    h, w = 64, 128
    with cuda_emulator() as ex:
        of, be, fn = _setup(ex, name)
        a, b = _device_pair(be, h, w, 1), _device_pair(be, h, w, 2)
        eager_a, eager_b = be.to_host(fn(*a)), be.to_host(fn(*b))
        with warnings.catch_warnings():
            warnings.simplefilter("error", GraphWarning)  # a failed capture must fail the test
            first = be.to_host(be.graphed(("pass", h, w), fn, *a))
            with ex.tracer.record() as c:
                replay = be.to_host(be.graphed(("pass", h, w), fn, *b))
    assert np.isfinite(eager_a).all() and not np.array_equal(eager_a, eager_b)
    np.testing.assert_array_equal(first, eager_a)
    np.testing.assert_array_equal(replay, eager_b)
    assert c.launches == {} and c.allocs == 0 and dict(c.ops) == {"setitem": 2}  # the frames copied in


@pytest.mark.parametrize("name, h, w", [("flownet2", 64, 128), ("flownet2-cs", 50, 90)])
def test_pass_has_no_array_op_copy_or_sync(name, h, w):
    """At 50x90 the frames are resized to 64x128 and the flow back (tables made by the warm call)."""
    with cuda_emulator() as ex:
        tracer = ex.tracer
        was, tracer.dry = tracer.dry, True
        try:
            of, be, fn = _setup(ex, name)
            a = _device_pair(be, h, w, 1)
            fn(*a)
            with tracer.record() as c:
                fn(*a)
        finally:
            tracer.dry = was
    assert dict(c.ops) == {} and c.h2d == c.d2h == c.syncs == 0
    if name == "flownet2":
        assert c.executor_calls <= FLOWNET2_CALLS, (dict(c.launches), c.ex_matmuls)


def test_calc_profile_uploads_the_frames_only():
    p = cvflow.testing.dispatch_profile("flownet2-c", 64, 64)
    t = p.total
    assert t.h2d == 2 and t.h2d_bytes == 2 * 64 * 64 * 3  # the uint8 frames, normalised by the first kernels
    assert t.syncs == t.d2h == 1 and dict(t.ops) == {}  # the flow out; no array op


def test_each_weight_is_held_once_on_the_device():
    name = "flownet2-c"
    weights = random_weights(name)
    with cuda_emulator() as ex:
        of = cvflow.create(name, weights=weights, device="cuda")
        of.calc(*frames(64, 64))
        params = of._params
        conv, tconv = params["conv3"]["0"], params["deconv2"]["0"]
        held = ex.tracer.live
    for p, key in ((conv, "conv3.0"), (tconv, "deconv2.0")):
        w = p["weight"]
        assert not w.flags.owndata and w.base is not None  # a view of the prepared matrix
        np.testing.assert_array_equal(np.asarray(w), weights[f"{key}.weight"])
    total = sum(v.nbytes for v in weights.values())
    assert total <= held < 1.1 * total, (held, total)


def test_calc_through_graphs_equals_eager_for_uint8_gray_and_both_directions():
    name = "flownet2-c"
    weights = random_weights(name)
    with cuda_emulator(), warnings.catch_warnings():
        warnings.simplefilter("error", GraphWarning)
        graphed = cvflow.create(name, weights=weights, device="cuda")
        eager = cvflow.create(name, weights=weights, device="cuda")
        eager.use_graphs = False
        for seed in (1, 2):
            a, b = frames(64, 128, seed)
            np.testing.assert_array_equal(graphed.calc(a, b, None), eager.calc(a, b, None))
        ga, gb = a[..., 0].copy(), b[..., 0].copy()
        np.testing.assert_array_equal(graphed.calc(ga, gb, None), eager.calc(ga, gb, None))
        for got, want in zip(graphed.calcBidirectional(a, b)[:2], eager.calcBidirectional(a, b)[:2]):
            np.testing.assert_array_equal(got, want)
