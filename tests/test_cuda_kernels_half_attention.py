"""Half-precision entry points (issue 20) of the Transformer and FlowNet kernels on the
emulator: softmax, global/local matching, shifted windows, local attention, clamp,
nearest upsampling, patch correlation and FlowNet's mean-free frames (<name>_f16 /
<name>_bf16), each against the NumPy op evaluated in float32 on the rounded inputs, so
that the rounding of the stored output is all that differs (the matching flows stay
float32: their tolerance is float32's). 1-pixel maps, and windows and displacements
reaching outside the map, are in every strategy."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cvflow.backends.cuda import k_attention, k_dtype, k_frames, k_patch_corr, k_tensor
from cvflow.backends.cuda.executor import f32, i32, launch_1d
from cvflow.errors import DeviceError
from cvflow.ops import attention, corr, frames, matching, upsample, window
from conftest import randn
from test_cuda_kernels_half import MODES, half_ulp, host_float, host_storage, rounded

seeds = st.integers(0, 2**31 - 1)
modes = st.sampled_from(MODES)


def device(ex, x, mode):
    """float32 host x -> `mode`'s storage on the executor."""
    h = host_storage(x, mode)
    return ex.asarray(h, h.dtype)


def back(ex, x, mode):
    """A device array of `mode`'s storage -> float32 host values (its dtype checked)."""
    h = ex.to_host(x)
    assert h.dtype == k_dtype.STORAGE[mode]
    return host_float(h)


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 12), cols=st.integers(1, 40), bias=st.booleans(), scale=st.floats(0.1, 2),
       mode=modes, seed=seeds)
def test_softmax_rows_half(ex, rows, cols, bias, scale, mode, seed):
    """The kernel on half scores in place; the float32 bias and the softmax in float."""
    rng = np.random.default_rng(seed)
    s = randn(rng, rows, cols) * 4
    b = randn(rng, rows, cols) * 3 if bias else None
    v = rounded(s, mode) * np.float32(scale)
    want = attention.softmax(v if b is None else v + b)
    buf = device(ex, s, mode)
    launch_1d(ex, k_dtype.kernel("softmax:softmax_rows", buf), rows, buf, ex.asarray(b if bias else np.zeros(1)),
              i32(rows), i32(cols), f32(scale), i32(bias), i32(rows), i32(rows), i32(1), i32(0))
    got = back(ex, buf, mode)
    assert np.all(np.abs(got - want) <= half_ulp(want, mode) + 2e-6)


def attention_reference(qr, kr, vr, bias, mode):
    """Attention of rounded q, k, v (..., L, C) as the half path stores it: the scores (the
    product of the rounded operands, rounded once, as the emulator's cuBLAS) and the
    probabilities rounded where the device stores them, products in float32. Returns the
    float32 output before its own rounding, and the slack of the stored probabilities: each
    may round to the other side (one ulp) when float32 sums in another order straddle a
    rounding boundary."""
    *lead, n_q, c = qr.shape
    n_k, batch = kr.shape[-2], math.prod(lead)
    s = rounded(np.matmul(qr.reshape(batch, n_q, c), kr.reshape(batch, n_k, c).swapaxes(-1, -2)), mode)
    s = s.reshape(*lead, n_q, n_k) * np.float32(1 / math.sqrt(c))
    p = rounded(attention.softmax(s if bias is None else s + bias), mode)
    return np.matmul(p, vr), np.matmul(2 * half_ulp(p, mode) + 2e-6, np.abs(vr))


@settings(max_examples=50, deadline=None)
@given(lead=st.sampled_from([(1,), (3,), (2, 2)]), n_q=st.integers(1, 24), n_k=st.integers(1, 24),
       c=st.integers(1, 8), d=st.integers(1, 5), bias=st.booleans(), mode=modes, seed=seeds)
def test_attention_half(ex, lead, n_q, n_k, c, d, bias, mode, seed):
    """Scores and probabilities are stored in half, then multiplied in float32."""
    rng = np.random.default_rng(seed)
    q, k, v = randn(rng, *lead, n_q, c) * 2, randn(rng, *lead, n_k, c), randn(rng, *lead, n_k, d)
    b = randn(rng, lead[-1], n_q, n_k) if bias else None
    want, slack = attention_reference(*(rounded(t, mode) for t in (q, k, v)), b, mode)
    got = k_attention.attention(ex, device(ex, q, mode), device(ex, k, mode), device(ex, v, mode),
                                None if b is None else ex.asarray(b.reshape(-1, n_q, n_k)))
    got = back(ex, got, mode)
    assert got.shape == want.shape
    assert np.all(np.abs(got - want) <= half_ulp(want, mode) + slack + 1e-5)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 2), splits=st.sampled_from([1, 2]), hh=st.integers(1, 4), ww=st.integers(1, 4),
       c=st.integers(1, 6), shift=st.booleans(), mode=modes, seed=seeds)
def test_window_attention_half(ex, n, splits, hh, ww, c, shift, mode, seed):
    """Shifted windows: half maps, the float32 mask (1-pixel windows included)."""
    rng = np.random.default_rng(seed)
    h, w = splits * hh, splits * ww
    q, k, v = (randn(rng, n, h, w, c) for _ in range(3))
    sh, sw = window.shift_sizes(h, w, splits) if shift else (0, 0)
    mask = window.shifted_window_mask(h, w, splits) if shift else None
    parts = [window.window_partition(np.roll(rounded(t, mode), (-sh, -sw), axis=(1, 2)), splits)
             .reshape(n, splits * splits, hh * ww, c) for t in (q, k, v)]
    want, slack = (np.roll(window.window_merge(t.reshape(-1, hh, ww, c), splits), (sh, sw), axis=(1, 2))
                   for t in attention_reference(*parts, mask, mode))
    got = k_attention.window_attention(ex, *(device(ex, t, mode) for t in (q, k, v)), splits, shift,
                                       None if mask is None else ex.asarray(mask))
    got = back(ex, got, mode)
    assert got.shape == want.shape
    assert np.all(np.abs(got - want) <= half_ulp(want, mode) + slack + 1e-5)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 2), splits=st.sampled_from([1, 2, 4]), hh=st.integers(1, 4), ww=st.integers(1, 4),
       c=st.integers(1, 5), sh=st.integers(0, 3), sw=st.integers(0, 3), mode=modes, seed=seeds)
def test_window_partition_and_merge_half_are_copies(ex, n, splits, hh, ww, c, sh, sw, mode, seed):
    x = rounded(randn(np.random.default_rng(seed), n, splits * hh, splits * ww, c) * 100, mode)
    sh, sw = min(sh, hh // 2), min(sw, ww // 2)
    parts = k_attention.window_partition(ex, device(ex, x, mode), splits, sh, sw)
    want = window.window_partition(np.roll(x, (-sh, -sw), axis=(1, 2)), splits)
    np.testing.assert_array_equal(back(ex, parts, mode), want.reshape(parts.shape))
    np.testing.assert_array_equal(back(ex, k_attention.window_merge(ex, parts, x.shape, splits, sh, sw), mode), x)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 2), h=st.integers(1, 6), w=st.integers(1, 6), c=st.integers(1, 8), mode=modes,
       seed=seeds)
def test_global_matching_half_gives_float32_flow(ex, n, h, w, c, mode, seed):
    """Scores stored in half (the product of the rounded features, rounded once, as the
    emulator's cuBLAS); the softmax and the flow in float32."""
    rng = np.random.default_rng(seed)
    f0, f1 = randn(rng, n, h, w, c) * 2, randn(rng, n, h, w, c) * 2
    q, k = (rounded(t, mode).reshape(n, h * w, c) for t in (f0, f1))
    s = rounded(np.matmul(q, k.swapaxes(-1, -2)), mode) * np.float32(1 / math.sqrt(c))
    grid = matching.pixel_grid(h, w)
    want = (attention.softmax(s) @ grid - grid).reshape(n, h, w, 2)
    got = ex.to_host(k_attention.global_matching(ex, device(ex, f0, mode), device(ex, f1, mode)))
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-5)


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 2), h=st.integers(1, 6), w=st.integers(1, 6), c=st.integers(1, 64),
       radius=st.integers(1, 4), mode=modes, seed=seeds)
def test_local_matching_half_gives_float32_flow(ex, n, h, w, c, radius, mode, seed):
    """Window positions outside the map (radius up to 4 on maps from 1 pixel) are left out."""
    k = (2 * radius + 1) ** 2
    cr = randn(np.random.default_rng(seed), n, h, w, k) / 2
    scores = rounded(cr, mode) * np.float32(math.sqrt(c))
    scores = np.where(matching.window_valid(h, w, radius), scores, np.float32(-1e9))
    want = (attention.softmax(scores).reshape(-1, k) @ matching.window_offsets(radius)).reshape(n, h, w, 2)
    got = ex.to_host(k_attention.local_matching(ex, device(ex, cr, mode), radius, c))
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    if h == w == 1:
        np.testing.assert_array_equal(got, 0)  # the pixel itself is the only candidate


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 2), h=st.integers(1, 6), w=st.integers(1, 6), c=st.integers(1, 64), d=st.integers(1, 4),
       radius=st.integers(1, 3), mode=modes, seed=seeds)
def test_local_attention_half(ex, n, h, w, c, d, radius, mode, seed):
    """Keys outside the map stay in the softmax, values outside are zero."""
    rng = np.random.default_rng(seed)
    cr, v = randn(rng, n, h, w, (2 * radius + 1) ** 2) / 2, randn(rng, n, h, w, d) * 3
    p = attention.softmax(rounded(cr, mode) * np.float32(math.sqrt(c)))
    want = (p[..., None] * attention.shift_neighbours(rounded(v, mode), radius)).sum(axis=-2)
    got = back(ex, k_attention.local_attention(ex, device(ex, cr, mode), device(ex, v, mode), radius, c), mode)
    assert got.shape == want.shape
    assert np.all(np.abs(got - want) <= half_ulp(want, mode) + 1e-5)


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 2), h=st.integers(1, 7), w=st.integers(1, 7), c=st.integers(1, 9), md=st.integers(0, 6),
       stride=st.integers(1, 2), mode=modes, seed=seeds)
def test_patch_correlation_half(ex, n, h, w, c, md, stride, mode, seed):
    """Displacements up to 6 px on maps from 1 pixel: most taps read outside (zero)."""
    rng = np.random.default_rng(seed)
    f1, f2 = randn(rng, n, h, w, c) * 2, randn(rng, n, h, w, c) * 2
    want = corr.patch_correlation(rounded(f1, mode), rounded(f2, mode), md, stride)
    got = back(ex, k_patch_corr.patch_correlation(ex, device(ex, f1, mode), device(ex, f2, mode), md, stride), mode)
    assert got.shape == want.shape
    assert np.all(np.abs(got - want) <= half_ulp(want, mode) + 2e-6 * (1 + np.abs(want)))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 2), h=st.integers(1, 6), w=st.integers(1, 6), c=st.integers(1, 4),
       factor=st.integers(1, 3), lo=st.floats(-2, 0), hi=st.floats(0, 2), mode=modes, seed=seeds)
def test_clamp_and_nearest_upsampling_half(ex, n, h, w, c, factor, lo, hi, mode, seed):
    """Bounds are float32 scalars: clamping to one between two half values stores it rounded."""
    y = randn(np.random.default_rng(seed), n, h, w, c)
    yr = rounded(y, mode)
    dev = device(ex, y, mode)
    want = rounded(np.clip(yr, np.float32(lo), np.float32(hi)), mode)
    np.testing.assert_array_equal(back(ex, k_tensor.clamp(ex, dev, lo, hi), mode), want)
    np.testing.assert_array_equal(back(ex, k_tensor.upsample_nearest(ex, dev, factor), mode),
                                  upsample.upsample_nearest(yr, factor))


@settings(max_examples=30, deadline=None)
@given(h=st.integers(1, 12), w=st.integers(1, 12), uint8=st.booleans(), gray=st.booleans(), mode=modes,
       seed=seeds)
def test_mean_free_pair_half_storage(ex, h, w, uint8, gray, mode, seed):
    """Frames and means as in float32 (integral frames: exact sums and means); only the
    stored map is rounded."""
    rng = np.random.default_rng(seed)
    shape = (h, w) if gray else (h, w, 3)
    a, b = (np.floor(rng.uniform(0, 255, shape)).astype(np.float32) for _ in range(2))
    want = rounded(frames.mean_free_pair(a, b), mode)
    if uint8:
        a, b = a.astype(np.uint8), b.astype(np.uint8)
    got = k_frames.mean_free_pair(ex, a, b, dtype=k_dtype.STORAGE[mode])
    np.testing.assert_array_equal(back(ex, got, mode), want)


def test_half_entry_points_keep_their_float32_arguments(ex):
    """The bias of the softmax and the flow of the matching are float32 in every mode."""
    s = ex.zeros((2, 3), np.float16)
    with pytest.raises(DeviceError, match=r"softmax:softmax_rows_f16 argument 1 must be a float array, "
                                          r"got DeviceArray float16"):
        ex.launch("softmax:softmax_rows_f16", (1,), (32,),
                  (s, s, i32(2), i32(3), f32(1), i32(1), i32(2), i32(2), i32(1), i32(0)))
    with pytest.raises(DeviceError, match=r"matching:local_match_flow_bf16 argument 1 must be a float array, "
                                          r"got DeviceArray uint16"):
        ex.launch("matching:local_match_flow_bf16", (1,), (32,),
                  (ex.zeros((1, 1, 1, 9), np.uint16), ex.zeros((1, 1, 1, 2), np.uint16), i32(1), i32(1), i32(1),
                   i32(1), f32(1)))
