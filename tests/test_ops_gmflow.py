"""GMFlow's ops: attention, windows, positional encoding, matching, propagation, convex upsampling."""
from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from cvflow.ops.attention import attention, local_attention, neighbourhood_scores, softmax
from cvflow.ops.linear import linear
from cvflow.ops.matching import global_matching, local_matching
from cvflow.ops.posenc import add_window_position, sine_position
from cvflow.ops.upsample import convex_upsample
from cvflow.ops.window import (MASK_VALUE, shift_sizes, shifted_window_mask, window_attention, window_merge,
                               window_partition)

seeds = st.integers(0, 2**31)


def _rand(seed, *shape, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def _naive_attention(q, k, v, bias=None):
    s = q.astype(np.float64) @ np.swapaxes(k, -1, -2) / math.sqrt(q.shape[-1])
    if bias is not None:
        s = s + bias
    e = np.exp(s - s.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)) @ v


# --- attention ----------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(seed=seeds, rows=st.integers(1, 20), cols=st.integers(1, 30), scale=st.sampled_from([1e-3, 1.0, 1e4]))
def test_softmax_rows_sum_to_one(seed, rows, cols, scale):
    p = softmax(_rand(seed, rows, cols, scale=scale), axis=-1)
    assert np.isfinite(p).all() and (p >= 0).all()
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)


@settings(max_examples=30, deadline=None)
@given(seed=seeds, b=st.integers(1, 3), lq=st.integers(1, 40), lk=st.integers(1, 40), c=st.integers(1, 16),
       scale=st.sampled_from([0.1, 1.0, 300.0]), block=st.sampled_from([64, 1000, 1 << 21]))
def test_attention_weights_are_a_distribution(seed, b, lq, lk, c, scale, block):
    """With v = 1 every output is the sum of one row of attention weights: exactly 1."""
    import cvflow.ops.attention as A

    old, A._SCORE_BYTES = A._SCORE_BYTES, block   # exercise row bands and window groups
    try:
        q, k = _rand(seed, b, lq, c, scale=scale), _rand(seed + 1, b, lk, c, scale=scale)
        out = attention(q, k, np.ones((b, lk, 1), np.float32))
        np.testing.assert_allclose(out, 1.0, atol=1e-5)
        v = _rand(seed + 2, b, lk, 3)
        if scale <= 1.0:
            np.testing.assert_allclose(attention(q, k, v), _naive_attention(q, k, v), atol=1e-5)
    finally:
        A._SCORE_BYTES = old


def test_attention_bias_masks_keys():
    q, k, v = _rand(0, 2, 5, 4), _rand(1, 2, 5, 4), _rand(2, 2, 5, 3)
    bias = np.zeros((5, 5), np.float32)
    bias[:, 3:] = -1e9                        # keys 3 and 4 excluded
    np.testing.assert_allclose(attention(q, k, v, bias=bias),
                               _naive_attention(q, k[:, :3], v[:, :3]), atol=1e-5)
    np.testing.assert_allclose(attention(q[0], k[0], v[0], bias=bias),    # no batch axis
                               _naive_attention(q[0], k[0, :3], v[0, :3]), atol=1e-5)


def test_linear_is_affine_map():
    x, w, b = _rand(0, 2, 3, 5), _rand(1, 4, 5), _rand(2, 4)
    np.testing.assert_allclose(linear(x, {"weight": w, "bias": b}), x @ w.T + b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(linear(x, {"weight": w}), x @ w.T, rtol=1e-5, atol=1e-6)


# --- windows ------------------------------------------------------------------------

window_maps = st.tuples(st.integers(1, 2), st.integers(1, 4), st.integers(1, 5), st.integers(1, 5),
                        st.integers(1, 3))   # n, splits, window h, window w, c


@settings(max_examples=40, deadline=None)
@given(shape=window_maps, seed=seeds)
def test_partition_merge_is_identity(shape, seed):
    n, s, wh, ww, c = shape
    x = _rand(seed, n, s * wh, s * ww, c)
    parts = window_partition(x, s)
    assert parts.shape == (n * s * s, wh, ww, c)
    np.testing.assert_array_equal(parts[1 if s > 1 else 0], x[0, :wh, ww:2 * ww] if s > 1 else x[0])
    np.testing.assert_array_equal(window_merge(parts, s), x)
    sh, sw = shift_sizes(s * wh, s * ww, s)
    rolled = np.roll(x, (-sh, -sw), axis=(1, 2))
    back = np.roll(window_merge(window_partition(rolled, s), s), (sh, sw), axis=(1, 2))
    np.testing.assert_array_equal(back, x)


@settings(max_examples=30, deadline=None)
@given(shape=window_maps)
def test_shifted_window_mask_groups_contiguous_regions(shape):
    _, s, wh, ww, _ = shape
    h, w = s * wh, s * ww
    mask = shifted_window_mask(h, w, s)
    assert mask.shape == (s * s, wh * ww, wh * ww)
    assert set(np.unique(mask)) <= {0.0, np.float32(MASK_VALUE)}
    np.testing.assert_array_equal(mask, mask.transpose(0, 2, 1))
    assert (np.diagonal(mask, axis1=1, axis2=2) == 0).all()
    # Windows away from the bottom/right edges hold one region of the unrolled map.
    interior = [i * s + j for i in range(s - 1) for j in range(s - 1)]
    assert (mask[interior] == 0).all()


def _naive_shifted_attention(q, k, v, s):
    """Definition in the original frame: two pixels interact iff the roll by -shift puts them in
    one window and neither or both of them wrapped around (per axis)."""
    n, h, w, c = q.shape
    sh, sw = shift_sizes(h, w, s)
    ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    win = (((ys - sh) % h) // (h // s)) * s + ((xs - sw) % w) // (w // s)
    key = np.stack([win, ys < sh, xs < sw], -1).reshape(-1, 3)
    allowed = (key[:, None] == key[None]).all(-1)
    bias = np.where(allowed, 0.0, MASK_VALUE)
    out = _naive_attention(q.reshape(n, h * w, c), k.reshape(n, h * w, c), v.reshape(n, h * w, c), bias)
    return out.reshape(n, h, w, c)


@settings(max_examples=25, deadline=None)
@given(shape=window_maps, seed=seeds)
def test_window_attention_matches_masked_full_attention(shape, seed):
    n, s, wh, ww, c = shape
    q, k, v = (_rand(seed + i, n, s * wh, s * ww, c) for i in range(3))
    np.testing.assert_allclose(window_attention(q, k, v, s, shift=True),
                               _naive_shifted_attention(q, k, v, s), atol=1e-5)
    flat = [t.reshape(n, -1, c) for t in (q, k, v)]
    np.testing.assert_allclose(window_attention(q, k, v, 1).reshape(n, -1, c), _naive_attention(*flat), atol=1e-5)


# --- positional encoding --------------------------------------------------------------

def test_sine_position_values():
    h, w, c = 6, 10, 16
    pos = sine_position(h, w, c)
    assert pos.shape == (h, w, c) and pos.dtype == np.float32
    y = (np.arange(h) + 1) / (h + 1e-6) * 2 * np.pi
    x = (np.arange(w) + 1) / (w + 1e-6) * 2 * np.pi
    np.testing.assert_allclose(pos[:, 0, 0], np.sin(y), atol=1e-6)
    np.testing.assert_allclose(pos[:, 0, 1], np.cos(y), atol=1e-6)
    np.testing.assert_allclose(pos[0, :, 8 + 2], np.sin(x / 10000 ** (2 / 8)), atol=1e-6)
    np.testing.assert_allclose(pos[0, :, 8 + 3], np.cos(x / 10000 ** (2 / 8)), atol=1e-6)
    assert np.ptp(pos[:, :, :8], axis=1).max() == 0 and np.ptp(pos[:, :, 8:], axis=0).max() == 0


def test_window_position_restarts_in_each_window():
    f = np.zeros((1, 8, 12, 16), np.float32)
    a, b = add_window_position(f, f + 1, 2)
    np.testing.assert_array_equal(a[0, :4, :6], sine_position(4, 6, 16))
    np.testing.assert_array_equal(a[0, 4:, 6:], a[0, :4, :6])
    np.testing.assert_array_equal(b, a + 1)


# --- matching -------------------------------------------------------------------------

def _one_hot_features(n, h, w, scale=12.0):
    """Each pixel its own direction: a perfect, unambiguous match for itself only."""
    eye = np.eye(h * w, dtype=np.float32).reshape(h, w, h * w) * scale
    return np.broadcast_to(eye, (n, h, w, h * w)).copy()


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 2), h=st.integers(1, 9), w=st.integers(1, 9))
def test_global_matching_of_identical_features_is_zero(n, h, w):
    f = _one_hot_features(n, h, w)
    flow = global_matching(f, f)
    assert flow.shape == (n, h, w, 2)
    np.testing.assert_allclose(flow, 0.0, atol=1e-3)


@settings(max_examples=20, deadline=None)
@given(h=st.integers(2, 8), w=st.integers(2, 8), dy=st.integers(-3, 3), dx=st.integers(-3, 3))
def test_global_matching_finds_a_shift(h, w, dy, dx):
    f0 = _one_hot_features(1, h, w)
    f1 = np.roll(f0, (dy, dx), axis=(1, 2))          # f1[y + dy, x + dx] = f0[y, x] (cyclically)
    flow = global_matching(f0, f1)[0]
    ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    np.testing.assert_allclose(flow[..., 0], (xs + dx) % w - xs, atol=1e-3)
    np.testing.assert_allclose(flow[..., 1], (ys + dy) % h - ys, atol=1e-3)


@settings(max_examples=20, deadline=None)
@given(h=st.integers(1, 9), w=st.integers(1, 9), r=st.integers(1, 4), dy=st.integers(-2, 2), dx=st.integers(-2, 2))
def test_local_matching_finds_a_shift_within_the_window(h, w, r, dy, dx):
    f0 = _one_hot_features(1, h, w)
    assert np.abs(local_matching(f0, f0, r)).max() < 1e-3
    f1 = np.roll(f0, (dy, dx), axis=(1, 2))
    flow = local_matching(f0, f1, r)[0]
    ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    ty, tx = ys + dy, xs + dx
    ok = (abs(dy) <= r) & (abs(dx) <= r) & (ty >= 0) & (ty < h) & (tx >= 0) & (tx < w)
    np.testing.assert_allclose(flow[ok], np.stack([np.full(ok.sum(), dx), np.full(ok.sum(), dy)], -1), atol=1e-3)


def test_local_matching_ignores_positions_outside_the_map():
    """Equal scores everywhere: the flow is the mean offset of the taps inside the map only."""
    f = np.zeros((1, 3, 3, 1), np.float32)
    flow = local_matching(f, f, 1)[0]
    np.testing.assert_allclose(flow[0, 0], [0.5, 0.5], atol=1e-6)
    np.testing.assert_allclose(flow[1, 1], [0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(flow[2, 1], [0.0, -0.5], atol=1e-6)


def _naive_local(q, k, v, r):
    n, h, w, c = q.shape
    out = np.zeros((n, h, w, v.shape[-1]))
    scores = np.zeros((n, h, w, (2 * r + 1) ** 2))
    for y in range(h):
        for x in range(w):
            s, vals = [], []
            for dy in range(-r, r + 1):
                for dx in range(-r, r + 1):
                    yy, xx = y + dy, x + dx
                    inside = 0 <= yy < h and 0 <= xx < w
                    kk = k[:, yy, xx] if inside else np.zeros((n, c))
                    s.append((q[:, y, x] * kk).sum(-1) / math.sqrt(c))
                    vals.append(v[:, yy, xx] if inside else np.zeros((n, v.shape[-1])))
            s = np.stack(s, -1)
            scores[:, y, x] = s
            p = np.exp(s - s.max(-1, keepdims=True))
            p /= p.sum(-1, keepdims=True)
            out[:, y, x] = (p[..., None] * np.stack(vals, 1)).sum(1)
    return scores, out


@settings(max_examples=20, deadline=None)
@given(seed=seeds, h=st.integers(1, 7), w=st.integers(1, 7), c=st.integers(1, 6), r=st.integers(1, 2))
def test_local_attention_zero_pads_keys_and_values(seed, h, w, c, r):
    q, k, v = _rand(seed, 2, h, w, c), _rand(seed + 1, 2, h, w, c), _rand(seed + 2, 2, h, w, 2)
    scores, out = _naive_local(q, k, v, r)
    np.testing.assert_allclose(neighbourhood_scores(q, k, r), scores, atol=1e-5)
    np.testing.assert_allclose(local_attention(q, k, v, r), out, atol=1e-5)


# --- convex upsampling ----------------------------------------------------------------

@settings(max_examples=15, deadline=None)
@given(seed=seeds, h=st.integers(3, 6), w=st.integers(3, 6), factor=st.sampled_from([2, 4, 8]))
def test_convex_upsample_is_a_convex_mix_of_scaled_neighbours(seed, h, w, factor):
    rng = np.random.default_rng(seed)
    mask = rng.standard_normal((1, h, w, 9 * factor * factor)).astype(np.float32)
    const = np.broadcast_to(np.float32([1.5, -2.0]), (1, h, w, 2)).copy()
    up = convex_upsample(const, mask, factor)
    assert up.shape == (1, h * factor, w * factor, 2)
    # Interior coarse pixels see 9 valid neighbours: a convex mix of a constant is the constant.
    inner = up[0, factor:(h - 1) * factor, factor:(w - 1) * factor]
    np.testing.assert_allclose(inner, np.broadcast_to(const[0, 0, 0] * factor, inner.shape), atol=1e-5)
    # One-hot weights on the centre tap reproduce nearest upsampling of flow * factor.
    flow = rng.standard_normal((1, h, w, 2)).astype(np.float32)
    centre = np.full((1, h, w, 9, factor, factor), -1e4, np.float32)
    centre[:, :, :, 4] = 0
    up = convex_upsample(flow, centre.reshape(1, h, w, -1), factor)
    np.testing.assert_allclose(up, np.repeat(np.repeat(flow, factor, 1), factor, 2) * factor, atol=1e-5)
