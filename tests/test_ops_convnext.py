"""SEA-RAFT's ops on NumPy (and CuPy where present): depthwise convolution (OpenCV fast
path and generic path against a direct sum), exact GELU, channels-last LayerNorm and the
mixture-of-Laplace uncertainty, as hypothesis properties; errors with `match=`."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cvflow.errors import InputError
from cvflow.ops import act, depthwise, laplace, norm
from conftest import randn

seeds = st.integers(0, 2**31 - 1)


def _direct(x, w, b, ph, pw):
    """Depthwise cross-correlation by its definition, in float64."""
    n, h, wd, c = x.shape
    kh, kw = w.shape[2:]
    pad = np.pad(x.astype(np.float64), ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    ho, wo = h + 2 * ph - kh + 1, wd + 2 * pw - kw + 1
    out = np.zeros((n, ho, wo, c))
    for i in range(kh):
        for j in range(kw):
            out += pad[:, i:i + ho, j:j + wo] * w[:, 0, i, j]
    return out + (0 if b is None else b)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 2), h=st.integers(1, 12), w=st.integers(1, 12), c=st.integers(1, 9),
       k=st.sampled_from([1, 3, 5, 7]), bias=st.booleans(), seed=seeds)
def test_depthwise_same_padding_matches_direct_sum(n, h, w, c, k, bias, seed):
    rng = np.random.default_rng(seed)
    x = randn(rng, n, h, w, c)
    p = {"weight": randn(rng, c, 1, k, k)}
    if bias:
        p["bias"] = randn(rng, c)
    got = depthwise.depthwise_conv2d(x, p, padding=k // 2)   # NumPy: OpenCV's filter2D
    want = _direct(x, p["weight"], p.get("bias"), k // 2, k // 2)
    assert got.shape == (n, h, w, c) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@settings(max_examples=30, deadline=None)
@given(h=st.integers(3, 10), w=st.integers(3, 10), c=st.integers(1, 6), kh=st.integers(1, 3),
       kw=st.integers(1, 3), ph=st.integers(0, 2), pw=st.integers(0, 2), seed=seeds)
def test_depthwise_any_padding_generic_path(h, w, c, kh, kw, ph, pw, seed):
    rng = np.random.default_rng(seed)
    x = randn(rng, 1, h, w, c)
    p = {"weight": randn(rng, c, 1, kh, kw), "bias": randn(rng, c)}
    got = depthwise.depthwise_conv2d(x, p, padding=(ph, pw))
    np.testing.assert_allclose(got, _direct(x, p["weight"], p["bias"], ph, pw), rtol=1e-5, atol=1e-5)


def test_depthwise_errors_name_the_shapes():
    x = np.zeros((1, 4, 4, 3), np.float32)
    with pytest.raises(InputError, match=r"weight \(C, 1, kh, kw\).*x shape \(1, 4, 4, 3\) float32 and weight shape \(4, 1, 3, 3\)"):
        depthwise.depthwise_conv2d(x, {"weight": np.zeros((4, 1, 3, 3), np.float32)})
    with pytest.raises(InputError, match=r"padding 0 leaves no output for x shape \(1, 4, 4, 3\) and a 7x7 kernel"):
        depthwise.depthwise_conv2d(x, {"weight": np.zeros((3, 1, 7, 7), np.float32)})


@settings(max_examples=30, deadline=None)
@given(size=st.integers(1, 300), scale=st.sampled_from([0.1, 1.0, 4.0, 30.0]), seed=seeds)
def test_gelu_is_the_erf_form(size, scale, seed):
    x = (randn(np.random.default_rng(seed), size) * scale).astype(np.float32)
    want = np.array([v * 0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x.astype(np.float64)])
    # ops.act.erf is Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7), scaled by up to |x|/2
    np.testing.assert_allclose(act.gelu(x), want, rtol=1e-5, atol=5e-7)


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 20), c=st.integers(2, 64), shift=st.floats(-50, 50), seed=seeds)
def test_layer_norm_last_axis(rows, c, shift, seed):
    rng = np.random.default_rng(seed)
    x = randn(rng, rows, c) + np.float32(shift)
    p = {"weight": randn(rng, c), "bias": randn(rng, c)}
    x64 = x.astype(np.float64)
    want = (x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + 1e-6) * p["weight"] + p["bias"]
    np.testing.assert_allclose(norm.layer_norm(x, p, eps=1e-6), want, rtol=1e-4, atol=1e-4)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 50), seed=seeds)
def test_laplace_mixture_expected_error(n, seed):
    rng = np.random.default_rng(seed)
    info = (randn(rng, n, 4) * 5).astype(np.float32)
    got = laplace.mixture_expected_error(info, 0.0, 10.0)
    w = np.exp(info[:, :2].astype(np.float64))
    w /= w.sum(1, keepdims=True)
    b = np.exp(np.stack([np.clip(info[:, 2], 0, 10), np.clip(info[:, 3], 0, 0)], 1).astype(np.float64))
    np.testing.assert_allclose(got, (w * b).sum(1), rtol=1e-5)
    assert got.dtype == np.float32 and (got >= 1 - 1e-6).all()  # both scales >= 1 with var_min = 0


def test_laplace_needs_four_channels():
    with pytest.raises(InputError, match=r"info must have 4 channels in its last axis, got shape \(3, 2\) float32"):
        laplace.mixture_expected_error(np.zeros((3, 2), np.float32))


def test_gelu_in_pieces_equals_one_pass():
    x = randn(np.random.default_rng(3), 3, 70001) * np.float32(3)
    np.testing.assert_array_equal(act.gelu(x), act._gelu(x))
    np.testing.assert_array_equal(act.gelu(x[:, ::2]), act._gelu(x[:, ::2]))
