"""Kernels of the FlowNet pass - flow scaling (true division, per-axis factors), FlowNet2's
input normalisation, the brightness error and warps of channel slices
(read in place) - on the CPU emulator against the NumPy ops."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import randn
from hypothesis import given, settings
from hypothesis import strategies as st

from cvflow.backends.cuda import k_frames, k_glue, k_norm, k_warp
from cvflow.errors import InputError
from cvflow.ops import frames, norm, sample

seeds = st.integers(0, 2**31 - 1)
sizes = st.integers(1, 7)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 2), h=sizes, w=sizes, c=st.integers(1, 4), s=st.floats(-100, 100, width=32),
       divide=st.booleans(), seed=seeds)
def test_scale_matches_numpy(ex, n, h, w, c, s, divide, seed):
    x = randn(np.random.default_rng(seed), n, h, w, c) * np.float32(30)
    if divide and s == 0:
        s = 20.0
    want = x / np.float32(s) if divide else x * np.float32(s)
    np.testing.assert_array_equal(np.asarray(k_glue.scale(ex, ex.asarray(x), s, divide)), want)
    if c == 2:
        f = np.asarray([0.7, 1.3], np.float32)
        np.testing.assert_array_equal(np.asarray(k_glue.scale(ex, ex.asarray(x), (0.7, 1.3))), x * f)


def test_scale_per_axis_needs_a_flow(ex):
    with pytest.raises(InputError, match=r"per-axis factors need a \(\.\.\., 2\) map, got \(1, 2, 2, 3\)"):
        k_glue.scale(ex, ex.zeros((1, 2, 2, 3)), (1, 2))


@settings(max_examples=30, deadline=None)
@given(h=st.integers(1, 40), w=st.integers(1, 40), kind=st.sampled_from(["uint8", "integral", "float"]),
       gray=st.booleans(), seed=seeds)
def test_mean_free_pair_matches_numpy(ex, h, w, kind, gray, seed):
    rng = np.random.default_rng(seed)
    shape = (h, w) if gray else (h, w, 3)
    a, b = (rng.uniform(0, 255, shape).astype(np.float32) for _ in range(2))
    if kind != "float":  # uint8 frames (or their float32 values): exact sums, exact means
        a, b = np.floor(a), np.floor(b)
    want = frames.mean_free_pair(a, b)
    if kind == "uint8":
        a, b = a.astype(np.uint8), b.astype(np.uint8)
    got = np.asarray(k_frames.mean_free_pair(ex, ex.asarray(a, a.dtype), b))  # a device frame and a host one
    assert got.shape == (1, h, w, 6)
    if kind != "float":
        np.testing.assert_array_equal(got, want)
    else:  # float64 sums in another order: the mean may round one float32 ulp apart
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_mean_free_pair_checks_its_frames(ex):
    match = r"img0 and img1 must be \(H, W, 3\) or \(H, W\) uint8 or float32 frames of one shape and dtype"
    with pytest.raises(InputError, match=match):
        k_frames.mean_free_pair(ex, np.zeros((4, 4, 3), np.float32), np.zeros((4, 5, 3), np.float32))
    with pytest.raises(InputError, match=match):
        k_frames.mean_free_pair(ex, np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4, 3), np.float32))
    with pytest.raises(InputError, match=match):
        k_frames.mean_free_pair(ex, np.zeros((4, 4, 2), np.float64), np.zeros((4, 4, 2), np.float64))


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 2), h=sizes, w=sizes, c=st.integers(1, 4), seed=seeds)
def test_brightness_error_of_channel_slices_matches_numpy(ex, n, h, w, c, seed):
    rng = np.random.default_rng(seed)
    wide = ex.asarray(randn(rng, n, h, w, 2 * c + 1))
    a, b = wide[..., 1:c + 1], wide[..., c + 1:]
    want = norm.channel_norm(np.asarray(a) - np.asarray(b))
    with ex.tracer.record() as rec:
        got = k_norm.channel_norm_diff(ex, a, b)
    np.testing.assert_array_equal(np.asarray(got), want)
    assert rec.other_ops == 0
    np.testing.assert_array_equal(np.asarray(k_norm.channel_norm_diff(ex, np.asarray(b), np.asarray(a))), want)
    with pytest.raises(InputError, match="a and b must have one shape"):
        k_norm.channel_norm_diff(ex, a, b[..., :1] if c > 1 else wide)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 2), h=sizes, w=sizes, c=st.integers(1, 3), seed=seeds)
def test_warp_of_a_channel_slice_matches_numpy(ex, n, h, w, c, seed):
    rng = np.random.default_rng(seed)
    wide = ex.asarray(randn(rng, n, h, w, c + 3))
    img = wide[..., 3:]
    flow = rng.uniform(-3, 3, (n, h, w, 2)).astype(np.float32)
    want = sample.warp(np.asarray(img), flow, "border")
    with ex.tracer.record() as rec:
        got = k_warp.resample2d(ex, img, ex.asarray(flow))
    np.testing.assert_array_equal(np.asarray(got), want)
    assert rec.other_ops == 0
