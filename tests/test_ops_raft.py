"""Ops used by RAFT: grid sampling, the correlation pyramid and its window lookup
(full volume and on the fly), ConvGRU cells, convex upsampling, and the model's
behaviour on small frames, checked against direct definitions."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cvflow
from cvflow.backends.base import nest
from cvflow.models.base import REGISTRY
from cvflow.models.raft import forward
from cvflow.ops.corr import build_corr, corr_lookup, corr_volume_bytes, pool_pyramid
from cvflow.backends.cpu import CPUBackend
from cvflow.ops.sample import bilinear_sample
from cvflow.backends.threads import limited
from cvflow.ops.upsample import convex_upsample, resize_bilinear, upsample_nearest
from conftest import randn

sizes = st.integers(min_value=2, max_value=9)
seeds = st.integers(min_value=0, max_value=2**31 - 1)


def _grid(n, h, w, xp=np):
    ys, xs = xp.meshgrid(xp.arange(h, dtype=xp.float32), xp.arange(w, dtype=xp.float32), indexing="ij")
    return xp.broadcast_to(xs, (n, h, w)), xp.broadcast_to(ys, (n, h, w))


# -- grid sampling -------------------------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(h=sizes, w=sizes, c=st.integers(1, 4), seed=seeds, padding=st.sampled_from(["zeros", "border"]))
def test_zero_displacement_sampling_is_identity(h, w, c, seed, padding):
    img = randn(np.random.default_rng(seed), 2, h, w, c)
    gx, gy = _grid(2, h, w)
    np.testing.assert_array_equal(bilinear_sample(img, gx, gy, padding), img)


@settings(max_examples=30, deadline=None)
@given(h=st.integers(5, 12), w=st.integers(5, 12), dx=st.integers(-2, 2), dy=st.integers(-2, 2), seed=seeds)
def test_integer_shift_sampling_is_slicing(h, w, dx, dy, seed):
    img = randn(np.random.default_rng(seed), 1, h, w, 3)
    gx, gy = _grid(1, h, w)
    out = bilinear_sample(img, gx + dx, gy + dy, "zeros")
    ys = slice(max(0, -dy), min(h, h - dy))
    xs = slice(max(0, -dx), min(w, w - dx))
    shifted = img[:, max(0, dy):min(h, h + dy), max(0, dx):min(w, w + dx)]
    np.testing.assert_array_equal(out[:, ys, xs], shifted)


def test_far_away_and_nan_coordinates():
    """Coordinates far outside (or NaN) neither overflow the integer cast nor wrap:
    zeros padding gives 0 (NaN stays NaN), border padding the nearest edge pixel."""
    img = randn(np.random.default_rng(3), 1, 5, 6, 2)
    x = np.array([[[1e12, -1e12, 3e9, np.nan]]], np.float32)
    y = np.full_like(x, 2.0)
    with np.errstate(invalid="raise"):
        zeros = bilinear_sample(img, x, y, "zeros")
        border = bilinear_sample(img, x, y, "border")
    np.testing.assert_array_equal(zeros[0, 0, :3], 0)
    np.testing.assert_array_equal(border[0, 0, :3], img[0, 2, [5, 0, 5]])
    assert np.isnan(zeros[0, 0, 3]).all() and np.isnan(border[0, 0, 3]).all()


# -- correlation -------------------------------------------------------------------------
def _naive_lookup(f1, f2, coords, levels, radius):
    """Direct definition: pooled all-pairs volumes sampled per offset with bilinear_sample."""
    n, h, w, d = f1.shape
    vol = np.einsum("nijd,nkld->nijkl", f1.astype(np.float64), f2.astype(np.float64)) / np.sqrt(d)
    vol = vol.reshape(n * h * w, vol.shape[3], vol.shape[4], 1)
    out = []
    for lvl in range(levels):
        if lvl:
            hh, ww = vol.shape[1] // 2, vol.shape[2] // 2
            vol = vol[:, :2 * hh, :2 * ww].reshape(len(vol), hh, 2, ww, 2, 1).mean(axis=(2, 4))
        if vol.size == 0:  # level pooled away: zero padding everywhere
            out += [np.zeros((n, h, w))] * (2 * radius + 1) ** 2
            continue
        c = coords.reshape(-1, 1, 1, 2).astype(np.float64) / 2 ** lvl
        for ox in range(-radius, radius + 1):  # x offset outermost
            for oy in range(-radius, radius + 1):
                s = bilinear_sample(vol, c[..., 0] + ox, c[..., 1] + oy, "zeros")
                out.append(s.reshape(n, h, w))
    return np.stack(out, axis=-1)


@settings(max_examples=15, deadline=None)
@given(h=st.integers(2, 9), w=st.integers(2, 9), seed=seeds, radius=st.integers(1, 3))
def test_lookup_matches_direct_definition(h, w, seed, radius):
    rng = np.random.default_rng(seed)
    d, levels = 5, 3
    f1, f2 = randn(rng, 1, h, w, d), randn(rng, 1, h, w, d)
    gx, gy = _grid(1, h, w)
    # flows reaching past the borders exercise the zero padding
    coords = np.stack([gx, gy], -1) + rng.uniform(-4, 4, (1, h, w, 2)).astype(np.float32)
    want = _naive_lookup(f1, f2, coords, levels, radius)
    for budget in (1 << 30, 0):
        got = corr_lookup(build_corr(f1, f2, levels, budget), coords, radius)
        assert got.shape == (1, h, w, levels * (2 * radius + 1) ** 2) and got.dtype == np.float32
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


@settings(max_examples=20, deadline=None)
@given(h=st.integers(2, 10), w=st.integers(2, 10), n=st.integers(1, 2), seed=seeds)
def test_on_the_fly_lookup_equals_full_volume(h, w, n, seed):
    rng = np.random.default_rng(seed)
    f1, f2 = randn(rng, n, h, w, 8), randn(rng, n, h, w, 8)
    coords = rng.uniform(-3, max(h, w) + 3, (n, h, w, 2)).astype(np.float32)
    full = build_corr(f1, f2, 4, budget=1 << 30)
    lazy = build_corr(f1, f2, 4, budget=0)
    assert full["volumes"] is not None and lazy["volumes"] is None
    np.testing.assert_allclose(corr_lookup(lazy, coords, 4), corr_lookup(full, coords, 4), atol=1e-5)


@settings(max_examples=20, deadline=None)
@given(h=st.integers(3, 10), w=st.integers(3, 10), seed=seeds, radius=st.integers(1, 4))
def test_identical_maps_peak_at_window_centre(h, w, seed, radius):
    f = randn(np.random.default_rng(seed), 1, h, w, 6)
    gx, gy = _grid(1, h, w)
    window = corr_lookup(build_corr(f, f, 1), np.stack([gx, gy], -1), radius)
    sums = window.reshape(-1, (2 * radius + 1) ** 2).sum(axis=0)
    centre = (2 * radius + 1) ** 2 // 2
    assert sums[centre] >= sums.max() - 1e-4 * abs(sums[centre])


def test_window_channels_put_x_offset_outermost():
    rng = np.random.default_rng(0)
    f1 = randn(rng, 1, 8, 8, 16)
    f2 = np.roll(f1, 2, axis=2)  # content moves +2 px in x: f2[x + 2] = f1[x]
    gx, gy = _grid(1, 8, 8)
    window = corr_lookup(build_corr(f1, f2, 1), np.stack([gx, gy], -1), 3)[0, 2:6, 2:4]
    best = window.reshape(-1, 49).sum(axis=0).argmax()
    assert divmod(best, 7) == (3 + 2, 3)  # (x index, y index)


def test_pyramid_and_budget():
    f = np.ones((1, 9, 13, 4), np.float32)
    assert [p.shape[1:3] for p in pool_pyramid(f, 4)] == [(9, 13), (4, 6), (2, 3), (1, 1)]
    assert corr_volume_bytes(1, 9, 13, 4) == 4 * 117 * (117 + 24 + 6 + 1)
    assert corr_volume_bytes(1, 135, 240, 4) > 1 << 30  # 1080p switches to on the fly


# -- GRU ------------------------------------------------------------------------------------
def _gru_params(rng, ch, cx, ks):
    return {f"conv{g}{i}": {"weight": 0.1 * randn(rng, ch, ch + cx, *k), "bias": 0.1 * randn(rng, ch)}
            for g in "zrq" for i, k in ks}


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _naive_step(h, x, p, sfx):
    def conv(inp, q):
        o, _, kh, kw = q["weight"].shape
        pad = np.pad(inp, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0))).astype(np.float64)
        out = np.zeros(inp.shape[:3] + (o,))
        for i in range(kh):
            for j in range(kw):
                out += pad[:, i:i + inp.shape[1], j:j + inp.shape[2]] @ q["weight"][:, :, i, j].T
        return out + q["bias"]
    hx = np.concatenate([h, x], -1)
    z, r = _sigmoid(conv(hx, p[f"convz{sfx}"])), _sigmoid(conv(hx, p[f"convr{sfx}"]))
    q = np.tanh(conv(np.concatenate([r * h, x], -1), p[f"convq{sfx}"]))
    return (1 - z) * h + z * q


@settings(max_examples=10, deadline=None)
@given(seed=seeds, h=sizes, w=sizes)
def test_conv_grus_match_definition(seed, h, w):
    rng = np.random.default_rng(seed)
    state, inp = np.tanh(randn(rng, 1, h, w, 4)), randn(rng, 1, h, w, 3)
    be = CPUBackend()
    # the input whole, or as the two parts the reference concatenates (context, motion)
    for x in ([inp], [np.ascontiguousarray(inp[..., :1]), np.ascontiguousarray(inp[..., 1:])]):
        p = _gru_params(rng, 4, 3, [("", (3, 3))])
        np.testing.assert_allclose(be.conv_gru(state, x, p), _naive_step(state, inp, p, ""), atol=1e-5)
        p = _gru_params(rng, 4, 3, [("1", (1, 5)), ("2", (5, 1))])
        want = _naive_step(_naive_step(state, inp, p, "1"), inp, p, "2")
        np.testing.assert_allclose(be.sep_conv_gru(state, x, p), want, atol=1e-5)


@settings(max_examples=10, deadline=None)
@given(seed=seeds, h=sizes, w=sizes)
def test_flow_head_fused_with_the_next_gru_step_changes_nothing(seed, h, w):
    """RAFT-small: the head's conv1 and the next ConvGRU step's h share are one conv."""
    rng = np.random.default_rng(seed)
    state, inp = np.tanh(randn(rng, 1, h, w, 4)), randn(rng, 1, h, w, 3)
    p = _gru_params(rng, 4, 3, [("", (3, 3))])
    head = {f"conv{i}": {"weight": 0.1 * randn(rng, o, c, 3, 3), "bias": 0.1 * randn(rng, o)}
            for i, (o, c) in ((1, (5, 4)), (2, (2, 5)))}
    x = [np.ascontiguousarray(inp[..., :1]), np.ascontiguousarray(inp[..., 1:])]
    be = CPUBackend()
    with be.workspace():
        net = be.conv_gru(state, x, p)
        delta = be.flow_head(net, head)
        assert ("h_zr", "", id(be.prepared(p["convz"], "gru4,1", None))) in be.memo()
        fused = be.conv_gru(net, x, p)
    with CPUBackend().workspace():  # the head of a state not from a GRU: no fusion
        plain = CPUBackend().flow_head(net.copy(), head)
    np.testing.assert_allclose(delta, plain, atol=1e-5)
    step = _naive_step(_naive_step(state, inp, p, ""), inp, p, "")
    np.testing.assert_allclose(fused, step, atol=1e-5)


# -- convex upsampling ------------------------------------------------------------------------
@pytest.mark.parametrize("factor", [2, 4, 8])
def test_convex_upsample_one_hot_centre_is_nearest(factor):
    rng = np.random.default_rng(factor)
    flow = randn(rng, 1, 3, 5, 2)
    mask = np.full((1, 3, 5, 9, factor * factor), -60.0, np.float32)
    mask[:, :, :, 4] = 60.0  # all weight on the centre neighbour
    up = convex_upsample(flow, mask.reshape(1, 3, 5, -1), factor)
    np.testing.assert_allclose(up, factor * upsample_nearest(flow, factor), atol=1e-5)


def test_convex_upsample_neighbour_layout():
    # mask channel k*f*f + i*f + j: neighbour k (row-major 3x3), sub-pixel row i, column j
    f, flow = 2, np.arange(9, dtype=np.float32).reshape(1, 3, 3, 1)
    mask = np.full((1, 3, 3, 9, f, f), -60.0, np.float32)
    mask[..., 5, 0, 1] = 60.0   # sub-pixel (0, 1) takes the right neighbour
    mask[..., 7, 1, 0] = 60.0   # sub-pixel (1, 0) takes the one below
    mask[..., 4, 0, 0] = mask[..., 4, 1, 1] = 60.0
    up = convex_upsample(flow, mask.reshape(1, 3, 3, -1), f)[0, ..., 0]
    assert up[2, 3] == f * 5 and up[3, 2] == f * 7   # pixel (1, 1): right is 5, below is 7
    assert up[0, 5] == 0.0                            # beyond the right border: zero padding
    np.testing.assert_allclose(convex_upsample(flow, np.zeros((1, 3, 3, 36), np.float32), f)[0, 2:4, 2:4, 0],
                               np.full((2, 2), f * 4.0), atol=1e-5)  # uniform mask: mean of 3x3 = 4


# -- bilinear resizing ----------------------------------------------------------------------
def _resize_reference(x, oh, ow, align):
    """PyTorch's F.interpolate(mode="bilinear") by its definition, in float64."""
    def src(n_in, n_out):
        d = np.arange(n_out, dtype=np.float64)
        if align:
            s = d * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros(n_out)
        else:
            s = np.maximum((d + 0.5) * (n_in / n_out) - 0.5, 0.0)
        i0 = np.minimum(np.floor(s).astype(int), n_in - 1)
        return i0, np.minimum(i0 + 1, n_in - 1), s - i0
    (y0, y1, ly), (x0, x1, lx) = src(x.shape[1], oh), src(x.shape[2], ow)
    v = x.astype(np.float64)
    rows = v[:, y0] * (1 - ly)[None, :, None, None] + v[:, y1] * ly[None, :, None, None]
    return rows[:, :, x0] * (1 - lx)[None, None, :, None] + rows[:, :, x1] * lx[None, None, :, None]


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 2), h=st.integers(1, 12), w=st.integers(1, 12), c=st.integers(1, 5),
       oh=st.integers(1, 40), ow=st.integers(1, 40), align=st.booleans(), threads=st.sampled_from([1, 2]),
       seed=seeds)
def test_resize_bilinear_matches_definition(n, h, w, c, oh, ow, align, threads, seed):
    # C of 2-4 takes cv2.merge for the channel interleave, 1 and 5 NumPy's copy
    x = randn(np.random.default_rng(seed), n, h, w, c)
    with limited(threads):
        got = resize_bilinear(x, oh, ow, align)
    assert got.shape == (n, oh, ow, c) and got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_allclose(got, _resize_reference(x, oh, ow, align), rtol=1e-5, atol=1e-5)


def test_resize_bilinear_8x_flow_in_pieces_over_threads():
    # RAFT-small's final upsampling: enough rows for several pieces on two threads
    x = randn(np.random.default_rng(3), 1, 55, 128, 2)
    want = _resize_reference(x, 440, 1024, True)
    for threads in (1, 2):  # BLAS rounds a share of rows apart from the whole: close, not equal
        with limited(threads):
            np.testing.assert_allclose(resize_bilinear(x, 440, 1024, True), want, rtol=1e-5, atol=1e-5)


# -- model on small frames ------------------------------------------------------------------
def _random_params(name, seed=0):
    model = REGISTRY[name]
    rng = np.random.default_rng(seed)
    flat = {}
    for key, shape in model.param_shapes(model.config).items():
        fan = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        flat[key] = np.asarray(rng.uniform(-1, 1, shape) * (np.sqrt(3 / fan) if len(shape) > 1 else 0.05),
                               np.float32)
        if key.endswith("running_var"):
            flat[key] = np.ones(shape, np.float32)
    return flat


@pytest.mark.parametrize("name", ["raft", "raft-small"])
def test_tiny_frames_give_finite_flow_through_api(name):
    cvflow.list_models()
    of = cvflow.create(name, weights=_random_params(name), device="cpu", iters=2)
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (21, 34, 3), dtype=np.uint8)
    flow = of.calc(a, np.roll(a, 1, axis=1), None)
    assert flow.shape == (21, 34, 2) and flow.dtype == np.float32 and np.isfinite(flow).all()


def test_forward_pads_odd_sizes_and_accepts_initial_flow():
    cvflow.list_models()
    model = REGISTRY["raft-small"]
    params = nest(_random_params("raft-small"))
    rng = np.random.default_rng(1)
    a = rng.uniform(0, 255, (130, 133, 3)).astype(np.float32)
    opts = {"iters": 1, "corr_budget": 1 << 30}
    cold = forward(params, a, a, model.config, opts, None)
    warm = forward(params, a, a, model.config, opts, np.full((130, 133, 2), 8.0, np.float32))
    assert cold.shape == warm.shape == (130, 133, 2)
    # with a warm start the update starts from the given flow: +8 px shows in the output
    assert abs(float((warm - cold).mean()) - 8.0) < 1.0


def test_iters_option_is_validated():
    with pytest.raises(cvflow.InputError, match="iters"):
        cvflow.create("raft-small", weights=_random_params("raft-small"), device="cpu", iters=0)
