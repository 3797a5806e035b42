"""CUDA kernels of the Transformer models (GMFlow, NeuFlow v2) - attention's softmax with
device-sized blocks, shifted windows, global and local matching, local attention, and
the array glue (concatenation, channel slices, crops, sums, scaling, clamping, nearest
upsampling, frame normalisation) - on the CPU emulator against the NumPy ops."""
from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cvflow.backends.cuda import k_attention, k_tensor
from cvflow.errors import InputError
from cvflow.ops import attention, matching, upsample, window
from conftest import randn

seeds = st.integers(0, 2**31 - 1)


@contextlib.contextmanager
def score_bytes(n):
    """Score blocks of at most n bytes (a few rows: the row-band path runs)."""
    saved, k_attention.SCORE_BYTES = k_attention.SCORE_BYTES, n
    try:
        yield
    finally:
        k_attention.SCORE_BYTES = saved


@settings(max_examples=25, deadline=None)
@given(lead=st.sampled_from([(1,), (3,), (2, 2)]), n_q=st.integers(1, 40), n_k=st.integers(1, 40),
       c=st.integers(1, 12), d=st.integers(1, 6), bias=st.booleans(), banded=st.booleans(), seed=seeds)
def test_attention_matches_numpy(ex, lead, n_q, n_k, c, d, bias, banded, seed):
    rng = np.random.default_rng(seed)
    q, k, v = randn(rng, *lead, n_q, c) * 3, randn(rng, *lead, n_k, c), randn(rng, *lead, n_k, d)
    b = randn(rng, lead[-1], n_q, n_k) if bias else None
    with score_bytes(64 * n_k if banded else k_attention.SCORE_BYTES):
        got = k_attention.attention(ex, q, k, v, None if b is None else b.reshape(-1, n_q, n_k))
    want = attention.attention(q, k, v, bias=b)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_attention_rejects_a_bias_of_another_shape(ex):
    q = ex.asarray(np.ones((2, 3, 4)))
    with pytest.raises(InputError, match=r"bias must be \(P, 3, 3\)"):
        k_attention.attention(ex, q, q, q, ex.asarray(np.ones((3, 3, 3))))


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 2), splits=st.sampled_from([1, 2, 3]), hh=st.integers(1, 5), ww=st.integers(1, 5),
       c=st.integers(1, 6), shift=st.booleans(), seed=seeds)
def test_window_attention_matches_numpy(ex, n, splits, hh, ww, c, shift, seed):
    rng = np.random.default_rng(seed)
    h, w = splits * hh, splits * ww
    q, k, v = (randn(rng, n, h, w, c) for _ in range(3))
    mask = window.shifted_window_mask(h, w, splits) if shift else None
    got = k_attention.window_attention(ex, q, k, v, splits, shift, None if mask is None else ex.asarray(mask))
    want = window.window_attention(q, k, v, splits, shift=shift, mask=mask)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 2), splits=st.sampled_from([1, 2, 4]), hh=st.integers(1, 4), ww=st.integers(1, 4),
       c=st.integers(1, 5), sh=st.integers(0, 3), sw=st.integers(0, 3), seed=seeds)
def test_window_partition_and_merge_are_rolled_numpy_windows(ex, n, splits, hh, ww, c, sh, sw, seed):
    x = randn(np.random.default_rng(seed), n, splits * hh, splits * ww, c)
    sh, sw = min(sh, hh // 2), min(sw, ww // 2)
    parts = k_attention.window_partition(ex, x, splits, sh, sw)
    want = window.window_partition(np.roll(x, (-sh, -sw), axis=(1, 2)), splits)
    np.testing.assert_array_equal(parts, want.reshape(parts.shape))
    np.testing.assert_array_equal(k_attention.window_merge(ex, parts, x.shape, splits, sh, sw), x)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 2), h=st.integers(1, 7), w=st.integers(1, 7), c=st.integers(1, 8), seed=seeds)
def test_global_matching_matches_numpy(ex, n, h, w, c, seed):
    rng = np.random.default_rng(seed)
    f0, f1 = randn(rng, n, h, w, c) * 2, randn(rng, n, h, w, c) * 2
    with score_bytes(2048):
        got = k_attention.global_matching(ex, f0, f1)
    np.testing.assert_allclose(got, matching.global_matching(f0, f1), rtol=1e-5, atol=2e-5)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 2), h=st.integers(1, 9), w=st.integers(1, 9), c=st.integers(1, 8),
       radius=st.integers(1, 4), seed=seeds)
def test_local_matching_and_local_attention_match_numpy(ex, n, h, w, c, radius, seed):
    from cvflow.backends.cuda import k_patch_corr

    rng = np.random.default_rng(seed)
    f0, f1, v = randn(rng, n, h, w, c) * 2, randn(rng, n, h, w, c) * 2, randn(rng, n, h, w, 3)
    corr = k_patch_corr.patch_correlation(ex, f0, f1, radius, 1)
    np.testing.assert_allclose(k_attention.local_matching(ex, corr, radius, c),
                               matching.local_matching(f0, f1, radius), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(k_attention.local_attention(ex, corr, v, radius, c),
                               attention.local_attention(f0, f1, v, radius), rtol=1e-5, atol=1e-5)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 2), h=st.integers(1, 6), w=st.integers(1, 6), c=st.integers(1, 4),
       factor=st.integers(1, 3), seed=seeds)
def test_clamp_and_nearest_upsampling_are_the_numpy_expressions(ex, n, h, w, c, factor, seed):
    y = randn(np.random.default_rng(seed), n, h, w, c)
    np.testing.assert_array_equal(k_tensor.clamp(ex, y, -0.5, 0.7), np.clip(y, np.float32(-0.5), np.float32(0.7)))
    np.testing.assert_array_equal(k_tensor.upsample_nearest(ex, y, factor), upsample.upsample_nearest(y, factor))


def test_glue_adds_a_map_broadcast_over_the_batch(ex):
    """GMFlow's position encoding (H, W, C) added to both frames' maps (2, H, W, C)."""
    from cvflow.backends.cuda import k_glue

    rng = np.random.default_rng(0)
    a, b = randn(rng, 2, 3, 4, 5), randn(rng, 3, 4, 5)
    np.testing.assert_array_equal(k_glue.binary(ex, ex.asarray(a), ex.asarray(b), "add"), a + b)
    with pytest.raises(InputError, match=r"add: shapes \(2, 3, 4, 5\) and \(4, 4, 5\) do not fit"):
        k_glue.binary(ex, ex.asarray(a), ex.asarray(np.ones((4, 4, 5), np.float32)), "add")
