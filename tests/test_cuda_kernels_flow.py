"""CUDA kernels of the flow models - RAFT's correlation pyramid and window lookup (full
volume and on the fly), convex upsampling, bilinear resizing, FlowNet's patch
correlation, bilinear sampling and warps - run on the CPU emulator against the NumPy
ops in cvflow/ops."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cvflow.backends.cuda import k_corr, k_patch_corr, k_upsample, k_warp
from cvflow.errors import InputError
from cvflow.ops import corr, pool, sample, upsample
from conftest import randn

seeds = st.integers(0, 2**31 - 1)
sizes = st.integers(1, 9)  # 1-pixel maps included


def _strided(a):
    """A non-contiguous copy of a (every other element of a twice-as-wide array)."""
    wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    wide[..., ::2] = a
    return wide[..., ::2]


def _coords(rng, n, h, w, far):
    """(N, H, W, 2) positions: near the map, or (far) some up to 1e5 px outside."""
    c = rng.uniform(-3, max(h, w) + 3, (n, h, w, 2)).astype(np.float32)
    if far:
        pick = rng.random((n, h, w, 2)) < 0.3
        c[pick] = rng.uniform(-1e5, 1e5, pick.sum()).astype(np.float32)
    return c


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 2), h=sizes, w=sizes, c=st.integers(1, 5), seed=seeds)
def test_pool_pyramid_matches_numpy(ex, n, h, w, c, seed):
    x = randn(np.random.default_rng(seed), n, h, w, c)
    for got, want in zip(k_corr.pool_pyramid(ex, _strided(x), 4), corr.pool_pyramid(x, 4)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(k_corr.pool_pyramid(ex, x, 2)[1], pool.avg_pool2x2(x), rtol=1e-6, atol=1e-7)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 2), h=sizes, w=sizes, d=st.integers(1, 12), levels=st.integers(1, 4),
       radius=st.integers(0, 4), far=st.booleans(), seed=seeds)
def test_corr_lookup_matches_numpy(ex, n, h, w, d, levels, radius, far, seed):
    rng = np.random.default_rng(seed)
    f1, f2 = randn(rng, n, h, w, d), randn(rng, n, h, w, d)
    coords = _coords(rng, n, h, w, far)
    want = corr.corr_lookup(corr.build_corr(f1, f2, levels), coords, radius)
    got = k_corr.corr_lookup(ex, k_corr.corr_pyramid(ex, _strided(f1), f2, levels), _strided(coords), radius)
    assert got.shape == (n, h, w, levels * (2 * radius + 1) ** 2) and got.flags.c_contiguous
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 2), h=sizes, w=sizes, d=st.integers(1, 12), levels=st.integers(1, 4),
       radius=st.integers(0, 4), far=st.booleans(), seed=seeds)
def test_corr_lookup_on_the_fly_matches_numpy(ex, n, h, w, d, levels, radius, far, seed):
    rng = np.random.default_rng(seed)
    f1, f2 = randn(rng, n, h, w, d), randn(rng, n, h, w, d)
    coords = _coords(rng, n, h, w, far)
    want = corr.corr_lookup(corr.build_corr(f1, f2, levels, budget=0), coords, radius)
    got = k_corr.corr_lookup_on_the_fly(ex, _strided(f1), k_corr.pool_pyramid(ex, f2, levels), coords, radius)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_on_the_fly_lookup_in_pixel_chunks(ex, monkeypatch):
    rng = np.random.default_rng(5)
    f1, f2 = randn(rng, 1, 6, 7, 8), randn(rng, 1, 6, 7, 8)
    coords = _coords(rng, 1, 6, 7, False)
    monkeypatch.setattr(k_corr, "_TAPS_BYTES", 4 * 64 * 5)  # radius 3: 5 pixels per chunk
    want = k_corr.corr_lookup(ex, k_corr.corr_pyramid(ex, f1, f2, 2), coords, 3)
    np.testing.assert_allclose(k_corr.corr_lookup_on_the_fly(ex, f1, k_corr.pool_pyramid(ex, f2, 2), coords, 3),
                               want, rtol=1e-5, atol=1e-5)


def test_corr_lookup_arguments_are_checked(ex):
    rng = np.random.default_rng(6)
    f = randn(rng, 1, 3, 4, 2)
    pyr = k_corr.corr_pyramid(ex, f, f, 2)
    with pytest.raises(InputError, match="radius must be 0..4, got 5"):
        k_corr.corr_lookup(ex, pyr, _coords(rng, 1, 3, 4, False), 5)
    with pytest.raises(InputError, match=r"coords must be \(N, H, W, 2\) with N\*H\*W = 12, got shape \(1, 3, 3, 2\)"):
        k_corr.corr_lookup(ex, pyr, _coords(rng, 1, 3, 3, False), 3)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 2), h=st.integers(1, 5), w=st.integers(1, 5), c=st.integers(1, 3),
       factor=st.integers(1, 8), seed=seeds)
def test_convex_upsample_matches_numpy(ex, n, h, w, c, factor, seed):
    rng = np.random.default_rng(seed)
    flow, mask = randn(rng, n, h, w, c) * 4, randn(rng, n, h, w, 9 * factor * factor) * 3
    want = upsample.convex_upsample(flow, mask, factor)
    np.testing.assert_allclose(k_upsample.convex_upsample(ex, _strided(flow), mask, factor), want,
                               rtol=1e-5, atol=1e-5 * factor)


def test_convex_upsample_mask_shape_is_checked(ex):
    rng = np.random.default_rng(7)
    with pytest.raises(InputError, match=r"mask must be \(1, 2, 2, 36\) for flow \(1, 2, 2, 2\) and factor 2"):
        k_upsample.convex_upsample(ex, randn(rng, 1, 2, 2, 2), randn(rng, 1, 2, 2, 9), 2)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 2), h=sizes, w=sizes, c=st.integers(1, 3), oh=st.integers(1, 20), ow=st.integers(1, 20),
       align=st.booleans(), seed=seeds)
def test_resize_bilinear_matches_numpy(ex, n, h, w, c, oh, ow, align, seed):
    x = randn(np.random.default_rng(seed), n, h, w, c)
    want = upsample.resize_bilinear(x, oh, ow, align)
    np.testing.assert_allclose(k_upsample.resize_bilinear(ex, _strided(x), oh, ow, align), want, rtol=1e-6, atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 2), h=sizes, w=sizes, c=st.integers(1, 12), md=st.integers(0, 8), stride=st.integers(1, 3),
       seed=seeds)
def test_patch_correlation_matches_numpy(ex, n, h, w, c, md, stride, seed):
    rng = np.random.default_rng(seed)
    f1, f2 = randn(rng, n, h, w, c), randn(rng, n, h, w, c)
    want = corr.patch_correlation(f1, f2, md, stride)
    got = k_patch_corr.patch_correlation(ex, _strided(f1), f2, md, stride)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_patch_correlation_as_flownet_uses_it(ex):
    rng = np.random.default_rng(8)
    f1, f2 = randn(rng, 1, 6, 30, 16), randn(rng, 1, 6, 30, 16)  # displacement 20 reaches past the map
    np.testing.assert_allclose(k_patch_corr.patch_correlation(ex, f1, f2), corr.patch_correlation(f1, f2),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError, match=r"f1 and f2 must be \(N, H, W, C\) of one shape"):
        k_patch_corr.patch_correlation(ex, f1, f2[:, :3])


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 2), h=sizes, w=sizes, c=st.integers(1, 4), padding=st.sampled_from(["zeros", "border"]),
       far=st.booleans(), seed=seeds)
def test_warps_match_numpy(ex, n, h, w, c, padding, far, seed):
    rng = np.random.default_rng(seed)
    img = randn(rng, n, h, w, c)
    flow = _coords(rng, n, h, w, far) - np.float32(max(h, w) / 2)
    want = sample.warp(img, flow, padding)
    np.testing.assert_array_equal(k_warp.warp(ex, _strided(img), _strided(flow), padding), want)
    if padding == "border":
        np.testing.assert_array_equal(k_warp.resample2d(ex, img, flow), want)
    else:
        np.testing.assert_array_equal(k_warp.bilinear_warp_zeros(ex, img, flow), want)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 2), h=sizes, w=sizes, oh=sizes, ow=sizes, padding=st.sampled_from(["zeros", "border"]),
       far=st.booleans(), seed=seeds)
def test_bilinear_sample_matches_numpy(ex, n, h, w, oh, ow, padding, far, seed):
    rng = np.random.default_rng(seed)
    img = randn(rng, n, h, w, 2)
    pos = _coords(rng, n, oh, ow, far)
    want = sample.bilinear_sample(img, pos[..., 0], pos[..., 1], padding)
    np.testing.assert_array_equal(k_warp.bilinear_sample(ex, img, pos, padding), want)


def test_sampling_arguments_are_checked(ex):
    rng = np.random.default_rng(9)
    img = randn(rng, 1, 3, 3, 1)
    with pytest.raises(InputError, match="padding must be 'zeros' or 'border', got 'reflect'"):
        k_warp.bilinear_sample(ex, img, _coords(rng, 1, 3, 3, False), "reflect")
    with pytest.raises(InputError, match=r"coordinates must be \(N, h, w, 2\) with N = 1"):
        k_warp.bilinear_sample(ex, img, randn(rng, 1, 3, 3, 3))
    with pytest.raises(InputError, match=r"flow \(1, 2, 3, 2\) must cover img \(1, 3, 3, 1\)"):
        k_warp.warp(ex, img, randn(rng, 1, 2, 3, 2))


@settings(max_examples=30, deadline=None)
@given(p=st.integers(1, 40), ch=st.integers(1, 9), const_rows=st.booleans(), seed=seeds)
def test_gru_step_matches_numpy(ex, p, ch, const_rows, seed):
    from cvflow.backends.cuda import k_gru
    from cvflow.ops import gru

    rng = np.random.default_rng(seed)
    h = randn(rng, 1, p, 1, ch)
    g, hzr = randn(rng, p, 3 * ch), randn(rng, p, 2 * ch)
    c = randn(rng, p if const_rows else 1, 3 * ch)
    wq = randn(rng, ch, ch)

    def conv_q(rh):  # a 1x1 "convolution" of r * h, on whichever side it runs
        return rh.reshape(-1, ch) @ (ex.asarray(wq) if isinstance(rh, ex.xp.ndarray) else wq)

    want = gru._step(np, h, g, c, hzr, conv_q)
    got = k_gru.gru_step(ex, ex.asarray(h), ex.asarray(g), ex.asarray(c), ex.asarray(hzr), conv_q)
    assert got.shape == h.shape
    np.testing.assert_allclose(ex.to_host(got), want, rtol=0, atol=2e-6)
