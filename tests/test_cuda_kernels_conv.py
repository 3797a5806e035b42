"""CUDA kernels for convolutions, activations and normalisation, run on the CPU emulator
(the same kernels/*.cu built by g++), against the NumPy ops in cvflow/ops."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from cvflow.backends.cuda import k_act, k_conv, k_norm
from cvflow.errors import InputError
from cvflow.ops import act, conv, conv_transpose, norm
from conftest import randn

seeds = st.integers(0, 2**31 - 1)


def _strided(rng, shape):
    """A non-contiguous float32 array of `shape` (every other element of a wider one)."""
    return randn(rng, *shape[:-1], 2 * shape[-1])[..., ::2]


def _close(got, want, rtol=1e-5):
    scale = max(1.0, float(np.abs(want).max(initial=0)))
    np.testing.assert_allclose(got, want, rtol=0, atol=rtol * scale * 8)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 2), h=st.integers(1, 9), w=st.integers(1, 9), c=st.integers(1, 6), o=st.integers(1, 5),
       kh=st.integers(1, 4), kw=st.integers(1, 4), s=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       p=st.tuples(st.integers(0, 3), st.integers(0, 3)), d=st.integers(1, 2),
       act_=st.sampled_from([None, "relu", "leaky"]), bias=st.booleans(), seed=seeds)
def test_conv2d_matches_numpy(ex, n, h, w, c, o, kh, kw, s, p, d, act_, bias, seed):
    assume(h + 2 * p[0] >= d * (kh - 1) + 1 and w + 2 * p[1] >= d * (kw - 1) + 1)
    rng = np.random.default_rng(seed)
    x = _strided(rng, (n, h, w, c))
    wt, b = randn(rng, o, c, kh, kw), (randn(rng, o) if bias else None)
    layer = k_conv.prepare_conv(ex, wt, b)
    got = k_conv.conv2d(ex, x, layer, s, p, d, act=act_, slope=0.2)
    ref = {"weight": wt} if b is None else {"weight": wt, "bias": b}
    _close(got, conv.conv2d(np.ascontiguousarray(x), ref, s, p, d, act=act_, slope=0.2))


def test_conv2d_chunks_the_column_buffer(ex, monkeypatch):
    rng = np.random.default_rng(1)
    x, wt, b = randn(rng, 2, 7, 6, 3), randn(rng, 4, 3, 3, 3), randn(rng, 4)
    monkeypatch.setattr(k_conv, "COL_BYTES", 4 * 27 * 5)  # 5 rows per chunk
    got = k_conv.conv2d(ex, x, k_conv.prepare_conv(ex, wt, b), 1, 1, act="relu")
    _close(got, conv.conv2d(x, {"weight": wt, "bias": b}, 1, 1, act="relu"))


def test_conv2d_writes_into_out(ex):
    rng = np.random.default_rng(2)
    x, wt = randn(rng, 1, 4, 5, 2), randn(rng, 3, 2, 1, 1)
    out = ex.empty((1, 4, 5, 3))
    assert k_conv.conv2d(ex, x, k_conv.prepare_conv(ex, wt), out=out) is out
    _close(out, conv.conv2d(x, {"weight": wt}))
    with pytest.raises(InputError, match=r"`out` must be a C-contiguous float32 array of shape \(1, 4, 5, 3\)"):
        k_conv.conv2d(ex, x, k_conv.prepare_conv(ex, wt), out=ex.empty((1, 4, 5, 6))[..., :3])


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 2), h=st.integers(1, 6), w=st.integers(1, 6), c=st.integers(1, 5),
       o=st.sampled_from([1, 2, 33]), k=st.integers(1, 4), s=st.integers(1, 3), p=st.integers(0, 2),
       op=st.integers(0, 1), act_=st.sampled_from([None, "relu", "leaky"]), bias=st.booleans(), seed=seeds)
def test_conv_transpose2d_matches_numpy(ex, n, h, w, c, o, k, s, p, op, act_, bias, seed):
    assume(op < s and (h - 1) * s - 2 * p + k + op >= 1 and (w - 1) * s - 2 * p + k + op >= 1)
    rng = np.random.default_rng(seed)
    x = _strided(rng, (n, h, w, c))
    wt, b = randn(rng, c, o, k, k), (randn(rng, o) if bias else None)
    got = k_conv.conv_transpose2d(ex, x, k_conv.prepare_conv_transpose(ex, wt, b), s, p, op, act=act_)
    ref = {"weight": wt} if b is None else {"weight": wt, "bias": b}
    _close(got, conv_transpose.conv_transpose2d(np.ascontiguousarray(x), ref, s, p, op, act=act_))


def test_prepared_layers_are_checked(ex):
    rng = np.random.default_rng(3)
    x = randn(rng, 1, 3, 3, 2)
    with pytest.raises(InputError, match=r"conv weight must be \(O, I, kh, kw\), got shape \(3, 2\)"):
        k_conv.prepare_conv(ex, randn(rng, 3, 2))
    with pytest.raises(InputError, match="input has 2 channels, the layer takes 4"):
        k_conv.conv2d(ex, x, k_conv.prepare_conv(ex, randn(rng, 3, 4, 1, 1)))
    with pytest.raises(InputError, match="needs a layer from prepare_conv_transpose"):
        k_conv.conv_transpose2d(ex, x, k_conv.prepare_conv(ex, randn(rng, 3, 2, 1, 1)))
    with pytest.raises(InputError, match="`act` must be None, 'relu' or 'leaky', got 'gelu'"):
        k_conv.conv2d(ex, x, k_conv.prepare_conv(ex, randn(rng, 3, 2, 1, 1)), act="gelu")


@settings(max_examples=30, deadline=None)
@given(shape=st.lists(st.integers(1, 7), min_size=1, max_size=4), slope=st.floats(0, 1, width=32), seed=seeds)
def test_activations_match_numpy(ex, shape, slope, seed):
    rng = np.random.default_rng(seed)
    x = randn(rng, *shape)
    dev = ex.asarray  # kernels work on device arrays (in place here)
    np.testing.assert_array_equal(k_act.relu_(ex, dev(x)), act.relu_(x.copy()))
    np.testing.assert_array_equal(k_act.leaky_relu_(ex, dev(x), slope), act.leaky_relu_(x.copy(), slope))
    y = randn(rng, *shape)
    np.testing.assert_array_equal(k_act.add_relu_(ex, dev(y), dev(x)), act.add_relu_(y.copy(), x))
    b = randn(rng, shape[-1])
    want = x + b
    np.testing.assert_array_equal(k_act.bias_act_(ex, dev(x), dev(b), "leaky", slope),
                                  np.maximum(want, want * slope))


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 2), h=st.integers(1, 12), w=st.integers(1, 12), c=st.integers(1, 9), relu=st.booleans(),
       offset=st.floats(-100, 100), seed=seeds)
def test_instance_norm_matches_numpy(ex, n, h, w, c, relu, offset, seed):
    rng = np.random.default_rng(seed)
    x = _strided(rng, (n, h, w, c)) + np.float32(offset)
    want = norm.instance_norm(np.ascontiguousarray(x), relu=relu)
    np.testing.assert_allclose(k_norm.instance_norm(ex, x, relu=relu), want, rtol=0, atol=2e-6 * max(1, abs(offset)))
    buf = ex.asarray(x)
    assert k_norm.instance_norm(ex, buf, relu=relu, inplace=True) is buf
    np.testing.assert_allclose(buf, want, rtol=0, atol=2e-6 * max(1, abs(offset)))


def test_instance_norm_statistics_span_chunks(ex):
    rng = np.random.default_rng(4)
    x = randn(rng, 2, 40, 30, 3) * 5 + 7  # 1200 pixels: several partial-sum chunks
    np.testing.assert_allclose(k_norm.instance_norm(ex, x), norm.instance_norm(x), rtol=0, atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(shape=st.tuples(st.integers(1, 2), st.integers(1, 6), st.integers(1, 6), st.integers(1, 9)),
       relu=st.booleans(), seed=seeds)
def test_batch_norm_matches_numpy(ex, shape, relu, seed):
    rng = np.random.default_rng(seed)
    c = shape[-1]
    p = {"weight": randn(rng, c), "bias": randn(rng, c), "running_mean": randn(rng, c),
         "running_var": np.abs(randn(rng, c)) + np.float32(0.1)}
    x = randn(rng, *shape)
    scale, shift = k_norm.batch_norm_affine(ex, p)
    got = k_norm.batch_norm_(ex, ex.asarray(x), scale, shift, relu)
    np.testing.assert_array_equal(got, norm.batch_norm_(x.copy(), p, relu=relu))


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 2), h=st.integers(1, 6), w=st.integers(1, 6), c=st.integers(1, 7), seed=seeds)
def test_channel_norm_matches_numpy(ex, n, h, w, c, seed):
    x = _strided(np.random.default_rng(seed), (n, h, w, c))
    np.testing.assert_allclose(k_norm.channel_norm(ex, x), norm.channel_norm(x), rtol=1e-6, atol=1e-7)
