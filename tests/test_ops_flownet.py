"""FlowNet ops: the patch correlation layer and ChannelNorm."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cvflow.ops.corr import patch_correlation
from cvflow.ops.norm import channel_norm

R, D = 10, 21  # FlowNetC: max displacement 20 px at stride 2 -> 21 x 21 displacements
CENTRE = R * D + R  # channel 220: zero displacement


def _maps(seed, n, h, w, c, count=2):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((n, h, w, c)).astype(np.float32) for _ in range(count)]


def _naive(f1, f2, max_displacement=20, stride=2):
    """Definition: out[..., (j+r)*(2r+1) + (i+r)] = mean_c f1[y, x] * f2[y + s*j, x + s*i], zeros outside."""
    n, h, w, c = f1.shape
    r = max_displacement // stride
    d = 2 * r + 1
    m = r * stride
    pad = np.pad(f2.astype(np.float64), ((0, 0), (m, m), (m, m), (0, 0)))
    out = np.zeros((n, h, w, d * d))
    for j in range(-r, r + 1):
        for i in range(-r, r + 1):
            shifted = pad[:, m + stride * j:m + stride * j + h, m + stride * i:m + stride * i + w]
            out[..., (j + r) * d + (i + r)] = (f1 * shifted).sum(-1) / c
    return out


shapes = st.tuples(st.integers(1, 2), st.integers(1, 26), st.integers(1, 40), st.integers(1, 9))


@settings(max_examples=30, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**31), block=st.sampled_from([1, 3, 16, 64]))
def test_matches_definition(shape, seed, block):
    f1, f2 = _maps(seed, *shape)
    out = patch_correlation(f1, f2, block=block)
    assert out.shape == shape[:3] + (D * D,) and out.dtype == np.float32
    np.testing.assert_allclose(out, _naive(f1, f2), rtol=1e-5, atol=1e-5)


@settings(max_examples=15, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**31), md=st.sampled_from([(2, 1), (4, 2), (6, 3)]))
def test_other_displacement_grids_match_definition(shape, seed, md):
    f1, f2 = _maps(seed, *shape)
    np.testing.assert_allclose(patch_correlation(f1, f2, *md), _naive(f1, f2, *md), rtol=1e-5, atol=1e-5)


def test_channel_layout():
    """A single matching feature at displacement (dx, dy) = (2i, 2j) lights channel (j+10)*21 + (i+10)."""
    f1 = np.zeros((1, 30, 40, 4), np.float32)
    f2 = np.zeros_like(f1)
    y, x, i, j = 12, 15, 3, -4
    f1[0, y, x, 1] = 2.0
    f2[0, y + 2 * j, x + 2 * i, 1] = 3.0
    out = patch_correlation(f1, f2)
    assert out[0, y, x, (j + R) * D + (i + R)] == pytest.approx(6.0 / 4)
    assert np.count_nonzero(out) == 1


@settings(max_examples=30, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**31))
def test_self_correlation_peaks_at_zero_displacement(shape, seed):
    (f,) = _maps(seed, *shape, count=1)
    total = patch_correlation(f, f).sum(axis=(0, 1, 2))
    # Cauchy-Schwarz: a shifted (zero-padded) copy never correlates more than the map itself.
    assert total.argmax() == CENTRE or total[CENTRE] >= total.max() * (1 - 1e-5)
    assert total[CENTRE] > 0


@settings(max_examples=30, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**31))
def test_swapping_inputs_negates_displacement(shape, seed):
    a, b = _maps(seed, *shape)
    ab, ba = patch_correlation(a, b), patch_correlation(b, a)
    _, h, w, _ = a.shape
    for j in range(-R, R + 1):
        for i in range(-R, R + 1):
            dy, dx = 2 * j, 2 * i
            ys, xs = slice(max(0, -dy), min(h, h - dy)), slice(max(0, -dx), min(w, w - dx))
            if ys.start >= ys.stop or xs.start >= xs.stop:
                continue
            lhs = ab[:, ys, xs, (j + R) * D + (i + R)]
            rhs = ba[:, ys.start + dy:ys.stop + dy, xs.start + dx:xs.stop + dx, (-j + R) * D + (-i + R)]
            np.testing.assert_allclose(lhs, rhs, rtol=1e-5, atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**31), alpha=st.floats(-3, 3), beta=st.floats(-3, 3))
def test_linear_in_each_input(shape, seed, alpha, beta):
    a1, a2, b = _maps(seed, *shape, count=3)
    alpha, beta = np.float32(alpha), np.float32(beta)
    mixed = alpha * a1 + beta * a2
    expect = alpha * patch_correlation(a1, b) + beta * patch_correlation(a2, b)
    np.testing.assert_allclose(patch_correlation(mixed, b), expect, rtol=1e-4, atol=1e-4)
    expect = alpha * patch_correlation(b, a1) + beta * patch_correlation(b, a2)
    np.testing.assert_allclose(patch_correlation(b, mixed), expect, rtol=1e-4, atol=1e-4)


def test_on_xp(xp):
    f1, f2 = _maps(0, 1, 9, 13, 5)
    out = patch_correlation(xp.asarray(f1), xp.asarray(f2))
    assert type(out) is type(xp.asarray(f1))
    np.testing.assert_allclose(np.asarray(out.get() if hasattr(out, "get") else out), _naive(f1, f2),
                               rtol=1e-5, atol=1e-6)


@settings(max_examples=20, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**31))
def test_channel_norm_is_l2_over_channels(shape, seed):
    (x,) = _maps(seed, *shape, count=1)
    out = channel_norm(x)
    assert out.shape == shape[:3] + (1,) and out.dtype == np.float32
    np.testing.assert_allclose(out[..., 0], np.linalg.norm(x.astype(np.float64), axis=-1), rtol=1e-5)


def _naive_conv(x, w, b, ph, pw):
    """Direct stride-1 cross-correlation in float64 with zero padding."""
    o, c, kh, kw = w.shape
    xpad = np.pad(x.astype(np.float64), ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    ho, wo = xpad.shape[1] - kh + 1, xpad.shape[2] - kw + 1
    out = np.zeros(x.shape[:1] + (ho, wo, o)) + b
    for i in range(kh):
        for j in range(kw):
            out += xpad[:, i:i + ho, j:j + wo] @ w[:, :, i, j].T.astype(np.float64)
    return out


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 2), h=st.integers(1, 12), w=st.integers(1, 12), o=st.integers(1, 3),
       extra=st.integers(0, 9), kh=st.sampled_from([1, 3, 5]), kw=st.sampled_from([1, 3]),
       ph=st.integers(0, 2), pw=st.integers(0, 2), seed=st.integers(0, 2**31))
def test_conv_with_few_outputs_matches_definition(n, h, w, o, extra, kh, kw, ph, pw, seed):
    """The flow heads (O <= C/4, stride 1) take conv2d's output-side path; same result."""
    from hypothesis import assume

    from cvflow.ops.conv import conv2d

    assume(h + 2 * ph >= kh and w + 2 * pw >= kw)
    c = 4 * o + extra
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, h, w, c)).astype(np.float32)
    p = {"weight": rng.standard_normal((o, c, kh, kw)).astype(np.float32),
         "bias": rng.standard_normal(o).astype(np.float32)}
    out = conv2d(x, p, padding=(ph, pw))
    np.testing.assert_allclose(out, _naive_conv(x, p["weight"], p["bias"], ph, pw), rtol=1e-4, atol=1e-4)
