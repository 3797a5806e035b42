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

from cvflow.backends.base import Backend
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
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=4), parts=st.integers(1, 6),
       axis=st.integers(0, 3), seed=seeds)
def test_concat_and_channels_copy_exactly(ex, shape, parts, axis, seed):
    rng = np.random.default_rng(seed)
    axis = axis % len(shape)
    arrays = []
    for _ in range(parts):
        s = list(shape)
        s[axis] = int(rng.integers(1, 4))
        arrays.append(randn(rng, *s))
    np.testing.assert_array_equal(k_tensor.concat(ex, arrays, axis), np.concatenate(arrays, axis))
    x = arrays[0]
    a = int(rng.integers(0, x.shape[-1]))
    b = int(rng.integers(a + 1, x.shape[-1] + 1))
    got = k_tensor.channels(ex, x, a, b)
    assert got.flags.c_contiguous
    np.testing.assert_array_equal(got, x[..., a:b])


def test_concat_names_the_mismatch(ex):
    with pytest.raises(InputError, match=r"cannot concatenate \(2, 3\) with \(2, 2\) along axis 0"):
        k_tensor.concat(ex, [np.ones((2, 2), np.float32), np.ones((2, 3), np.float32)], 0)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 2), h=st.integers(1, 6), w=st.integers(1, 6), c=st.integers(1, 4),
       pads=st.tuples(*[st.integers(0, 2)] * 4), factor=st.integers(1, 3), alpha=st.floats(-3, 3, width=32),
       seed=seeds)
def test_crop_add_scale_clamp_nearest_are_the_numpy_expressions(ex, n, h, w, c, pads, factor, alpha, seed):
    rng = np.random.default_rng(seed)
    top, bottom, left, right = pads
    x = randn(rng, n, h + top + bottom, w + left + right, c)
    np.testing.assert_array_equal(k_tensor.crop(ex, x, pads), x[:, top:top + h, left:left + w])
    y, b = randn(rng, n, h, w, c), randn(rng, h, w, c)
    np.testing.assert_array_equal(k_tensor.add(ex, y, b), y + b)
    np.testing.assert_array_equal(k_tensor.add(ex, y, y), y + y)
    np.testing.assert_array_equal(k_tensor.scale(ex, y, alpha), y * np.float32(alpha))
    np.testing.assert_array_equal(k_tensor.clamp(ex, y, -0.5, 0.7), np.clip(y, np.float32(-0.5), np.float32(0.7)))
    np.testing.assert_array_equal(k_tensor.upsample_nearest(ex, y, factor), upsample.upsample_nearest(y, factor))
    np.testing.assert_array_equal(k_tensor.copy(ex, y), y)


def test_add_names_the_shapes(ex):
    with pytest.raises(InputError, match=r"cannot add \(3,\) to \(2, 2\)"):
        k_tensor.add(ex, np.ones((2, 2), np.float32), np.ones(3, np.float32))


@settings(max_examples=20, deadline=None)
@given(h=st.integers(1, 20), w=st.integers(1, 20), multiple=st.sampled_from([1, 8, 16]),
       norm=st.sampled_from(["signed", "unit", "mean_std"]), seed=seeds)
def test_frames_and_crop_are_the_generic_ones_bit_for_bit(ex, h, w, multiple, norm, seed):
    from cvflow.backends.cuda.backend import CudaBackend

    rng = np.random.default_rng(seed)
    frames = [rng.integers(0, 256, (h, w, 3)).astype(np.float32) for _ in range(2)]
    stats = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)) if norm == "mean_std" else (None, None)
    want, pads = Backend().frames(*frames, multiple, norm, *stats)
    cuda = CudaBackend(ex)
    got, got_pads = cuda.frames(*(ex.asarray(f) for f in frames), multiple, norm, *stats)
    assert got_pads == pads
    np.testing.assert_array_equal(got, want)
    cropped = cuda.crop(got, pads)
    assert cropped.flags.c_contiguous
    np.testing.assert_array_equal(cropped, Backend().crop(want, pads))
