"""CUDA kernels of SEA-RAFT's ConvNeXt update - depthwise convolution, channels-last
LayerNorm, exact GELU, Linear - on the CPU emulator against the NumPy ops in cvflow/ops."""
from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from cvflow.backends.cuda import k_convnext
from cvflow.ops import act, depthwise, linear, norm
from conftest import randn

seeds = st.integers(0, 2**31 - 1)


def _strided(a):
    wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    wide[..., ::2] = a
    return wide[..., ::2]


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 2), h=st.integers(1, 10), w=st.integers(1, 10), c=st.integers(1, 9),
       kh=st.sampled_from([1, 3, 7]), kw=st.sampled_from([1, 3, 7]), extra=st.integers(0, 2),
       bias=st.booleans(), seed=seeds)
def test_depthwise_matches_numpy(ex, n, h, w, c, kh, kw, extra, bias, seed):
    rng = np.random.default_rng(seed)
    x = randn(rng, n, h, w, c)
    p = {"weight": randn(rng, c, 1, kh, kw)}
    if bias:
        p["bias"] = randn(rng, c)
    pad = (kh // 2 + extra, kw // 2)
    layer = k_convnext.prepare_depthwise(ex, p["weight"], p.get("bias"))
    got = k_convnext.depthwise_conv2d(ex, _strided(x), layer, p, pad)
    want = depthwise.depthwise_conv2d(x, p, pad)
    assert got.shape == want.shape and got.flags.c_contiguous
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 40), c=st.integers(1, 400), shift=st.floats(-20, 20), seed=seeds)
def test_layer_norm_matches_numpy(ex, rows, c, shift, seed):
    rng = np.random.default_rng(seed)
    x = randn(rng, rows, c) + np.float32(shift)
    p = {"weight": randn(rng, c), "bias": randn(rng, c)}
    got = k_convnext.layer_norm(ex, _strided(x), p["weight"], p["bias"], 1e-6)
    np.testing.assert_allclose(got, norm.layer_norm(x, p, 1e-6), rtol=1e-4, atol=1e-4)


@settings(max_examples=30, deadline=None)
@given(size=st.integers(1, 3000), scale=st.sampled_from([0.1, 1.0, 5.0, 40.0]), seed=seeds)
def test_gelu_matches_numpy_and_erf(ex, size, scale, seed):
    x = (randn(np.random.default_rng(seed), size) * scale).astype(np.float32)
    got = k_convnext.gelu(ex, _strided(x))
    np.testing.assert_allclose(got, act.gelu(x), rtol=1e-5, atol=5e-7)
    exact = np.array([v * 0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x.astype(np.float64)])
    np.testing.assert_allclose(got, exact, rtol=1e-6, atol=1e-7)


@settings(max_examples=20, deadline=None)
@given(lead=st.lists(st.integers(1, 5), min_size=1, max_size=3), i=st.integers(1, 40), o=st.integers(1, 40),
       bias=st.booleans(), seed=seeds)
def test_linear_matches_numpy(ex, lead, i, o, bias, seed):
    rng = np.random.default_rng(seed)
    x = randn(rng, *lead, i)
    p = {"weight": randn(rng, o, i)}
    if bias:
        p["bias"] = randn(rng, o)
    got = k_convnext.linear(ex, _strided(x), k_convnext.prepare_linear(ex, p["weight"], p.get("bias")))
    assert got.shape == (*lead, o)
    np.testing.assert_allclose(got, linear.linear(x, p), rtol=1e-5, atol=1e-5)
