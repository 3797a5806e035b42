"""Half-precision kernels of the RAFT / SEA-RAFT / FlowNet path (issue 20) on the emulator:
the typed entry points (<name>_f16 / <name>_bf16) of im2col, col2im, act, gru, corr_lookup,
upsample, sample, frames and strided, through their wrappers' dispatch on storage dtype.
Each is compared with the NumPy op evaluated in float32 on the rounded inputs, so that
rounding is all that differs: where a kernel computes in float exactly as the op does, the
stored output is the op's result rounded once (exact equality); where sums run in another
order or an intermediate is stored in half, the bound adds those terms to half an ulp of
the output. Coordinates and flows stay float32 (1-pixel maps and positions far outside the
map included)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_cuda_kernels_half import MODES, half_ulp, host_float, host_storage, rounded

from cvflow.backends.base import Backend
from cvflow.backends.cuda import k_act, k_conv, k_corr, k_dtype, k_glue, k_gru, k_upsample, k_warp
from cvflow.errors import InputError
from cvflow.ops import act, conv, conv_transpose, corr, gru, pool, sample, upsample
from cvflow.testing import cuda_emulator

seeds = st.integers(0, 2**31 - 1)
modes = st.sampled_from(MODES)
sizes = st.integers(1, 7)  # 1-pixel maps included
F32 = np.float32


def _rng_arrays(seed, *shapes, scale=1.0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(s) * scale).astype(F32) for s in shapes]


def _up(ex, x, mode):
    """float32 host x -> device array in `mode`'s storage."""
    s = host_storage(x, mode)
    return ex.asarray(s, s.dtype)


def _down(ex, a, mode):
    """Device array in `mode`'s storage -> float32 host values (checking its dtype)."""
    h = ex.to_host(a)
    assert h.dtype == np.dtype(k_dtype.STORAGE[mode])
    return host_float(h)


def _coords(rng, n, h, w, far):
    """(N, H, W, 2) float32 positions near the map, or (far) some up to 1e5 px outside."""
    c = rng.uniform(-3, max(h, w) + 3, (n, h, w, 2)).astype(F32)
    if far:
        pick = rng.random((n, h, w, 2)) < 0.3
        c[pick] = rng.uniform(-1e5, 1e5, pick.sum()).astype(F32)
    return c


def _acc(terms_abs, k):
    """float32 accumulation bound of k products whose magnitudes sum to terms_abs."""
    return 2 * k * np.finfo(F32).eps * terms_abs + 1e-30


# -- act.cu ---------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(st.tuples(st.integers(1, 3), sizes, st.integers(1, 6)), modes, st.sampled_from([None, "relu", "leaky"]),
       st.booleans(), seeds)
def test_bias_act_add_relu_gelu_half(shape, mode, act_, bias, seed):
    x, b, y = _rng_arrays(seed, shape, shape[-1:], shape, scale=3.0)
    xr, br, yr = (rounded(v, mode) for v in (x, b, y))
    want = xr + br if bias else xr.copy()
    want = act.relu(want) if act_ == "relu" else (act.leaky_relu(want, 0.1) if act_ == "leaky" else want)
    with cuda_emulator() as ex:
        dx = _up(ex, x, mode)
        assert k_act.bias_act_(ex, dx, _up(ex, b, mode) if bias else None, act_, 0.1) is dx
        got = _down(ex, dx, mode)
        np.testing.assert_array_equal(got, rounded(want, mode))
        dy = _up(ex, y, mode)
        k_act.add_relu_(ex, dy, _up(ex, x, mode))  # the summand in the same storage
        np.testing.assert_array_equal(_down(ex, dy, mode), rounded(act.relu(yr + xr), mode))
        dg = _up(ex, x, mode)
        launch = k_dtype.kernel("act:gelu", dg)
        assert launch.endswith("_f16" if mode == "fp16" else "_bf16")
        from cvflow.backends.cuda import k_convnext

        g = _down(ex, k_convnext.gelu(ex, dg), mode)
    wg = act.gelu(xr)
    assert np.all(np.abs(g - wg) <= half_ulp(wg, mode) + 1e-6 * (1 + np.abs(wg)))


# -- im2col.cu, col2im.cu (through the convolutions) ---------------------------------------------
@settings(max_examples=40, deadline=None)
@given(st.integers(1, 2), sizes, sizes, st.integers(1, 5), st.integers(1, 5), st.sampled_from([1, 3]),
       st.integers(1, 2), st.booleans(), st.sampled_from([None, "relu", "leaky"]), modes, seeds)
def test_conv2d_half(n, h, w, c, o, k, s, bias, act_, mode, seed):
    """Columns gathered in half (bit copies), the product accumulated in float32 and
    rounded (the executor's half matmul), then bias/act in float, rounded again."""
    x, wt, b = _rng_arrays(seed, (n, h, w, c), (o, c, k, k), (o,))
    p = {"weight": rounded(wt, mode)}
    if bias:
        p["bias"] = rounded(b, mode)
    xr = rounded(x, mode)
    raw = conv.conv2d(xr, {"weight": p["weight"]}, s, k // 2)
    want = conv.conv2d(xr, p, s, k // 2, act=act_)
    mag = conv.conv2d(np.abs(xr), {"weight": np.abs(p["weight"])}, s, k // 2)
    with cuda_emulator() as ex:
        layer = k_conv.prepare_conv(ex, p["weight"], p.get("bias"))
        got = _down(ex, k_conv.conv2d(ex, _up(ex, x, mode), layer, s, k // 2, act=act_), mode)
    assert got.shape == want.shape
    stored = bias or act_ is not None  # the product is stored in half before its epilogue reads it
    tol = half_ulp(want, mode) + _acc(mag, k * k * c) + (half_ulp(raw, mode) if stored else 0)
    assert np.all(np.abs(got - want) <= tol)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 2), st.integers(1, 5), st.integers(1, 5), st.integers(1, 4), st.integers(1, 4),
       st.sampled_from([2, 3, 4]), st.integers(1, 2), st.booleans(), modes, seeds)
def test_conv_transpose2d_half(n, h, w, c, o, k, s, bias, mode, seed):
    """Taps rounded to half by the product, summed in float by col2im, rounded once more."""
    x, wt, b = _rng_arrays(seed, (n, h, w, c), (c, o, k, k), (o,))
    p = {"weight": rounded(wt, mode)}
    if bias:
        p["bias"] = rounded(b, mode)
    xr = rounded(x, mode)
    want = conv_transpose.conv_transpose2d(xr, p, s, 0, 0, act="relu")
    taps = np.abs(xr.reshape(-1, c)) @ np.abs(p["weight"].reshape(c, -1))
    overlap = (-(-k // s)) ** 2  # taps summed into one output
    with cuda_emulator() as ex:
        layer = k_conv.prepare_conv_transpose(ex, p["weight"], p.get("bias"))
        got = _down(ex, k_conv.conv_transpose2d(ex, _up(ex, x, mode), layer, s, 0, 0, act="relu"), mode)
    assert got.shape == want.shape
    tmax = taps.max(initial=0)
    tol = half_ulp(want, mode) + overlap * (half_ulp(tmax, mode) + _acc(tmax, c)) + _acc(overlap * tmax, overlap)
    assert np.all(np.abs(got - want) <= tol)


@settings(max_examples=30, deadline=None)
@given(sizes, sizes, st.integers(1, 4), st.integers(1, 4), modes, seeds)
def test_conv2d_parts_applies_pending_epilogues_in_half(h, w, c0, c1, mode, seed):
    """im2col_parts: a Pending part's bias and ReLU applied in float as it is gathered and
    rounded to the columns' half storage; a view as the second part."""
    x0, x1, b0, wt = _rng_arrays(seed, (1, h, w, c0), (1, h, w, 2 * c1), (c0,), (3, c0 + c1, 3, 3))
    wr, br = rounded(wt, mode), rounded(b0, mode)
    part0 = rounded(act.relu(rounded(x0, mode) + br), mode)
    part1 = rounded(x1, mode)[..., c1:]
    want = conv.conv2d(np.concatenate([part0, part1], -1), {"weight": wr}, 1, 1)
    mag = conv.conv2d(np.abs(np.concatenate([part0, part1], -1)), {"weight": np.abs(wr)}, 1, 1)
    with cuda_emulator() as ex:
        layer = k_conv.prepare_conv(ex, wr)
        parts = [k_conv.Pending(_up(ex, x0, mode), ex.asarray(br), "relu"), _up(ex, x1, mode)[..., c1:]]
        got = _down(ex, k_conv.conv2d_parts(ex, parts, layer, 1, 1), mode)
        with pytest.raises(InputError, match=r"concatenated parts differ in storage dtype"):
            k_conv.conv2d_parts(ex, [parts[0], ex.asarray(x1[..., c1:])], layer, 1, 1)
    assert np.all(np.abs(got - want) <= half_ulp(want, mode) + _acc(mag, 9 * (c0 + c1)))


# -- gru.cu ------------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(st.integers(1, 30), st.integers(1, 8), st.booleans(), st.booleans(), modes, seeds)
def test_gru_step_half(p, ch, const_rows, has_hzr, mode, seed):
    """State, shares, r * h and q in half; gates and the state update in float32."""
    h, g, hzr, c, wq = _rng_arrays(seed, (1, p, 1, ch), (p, 3 * ch), (p, 2 * ch), (p if const_rows else 1, 3 * ch),
                                   (ch, ch))
    hr, gr, hzrr, cr, wqr = (rounded(v, mode) for v in (h, g, hzr, c, wq))

    def conv_q_host(rh):  # as the device side: r * h stored in half, product rounded to half
        return rounded(rounded(rh.reshape(-1, ch), mode) @ wqr, mode)

    want = gru._step(np, hr, gr, cr, hzrr if has_hzr else np.zeros_like(hzrr), conv_q_host)
    with cuda_emulator() as ex:
        dwq = _up(ex, wq, mode)

        def conv_q(rh):
            assert rh.dtype == dwq.dtype
            return ex.matmul(rh.reshape(-1, ch), dwq)

        got = k_gru.gru_step(ex, _up(ex, h, mode), _up(ex, g, mode), _up(ex, c, mode),
                             _up(ex, hzr, mode) if has_hzr else None, conv_q)
        got = _down(ex, got, mode)
    assert got.shape == want.shape
    assert np.all(np.abs(got - want) <= half_ulp(want, mode) + 4e-6)


# -- corr_lookup.cu ------------------------------------------------------------------------------
def _state(vols_r, n, h, w):
    """cvflow.ops.corr's lookup state over given (rounded) volumes."""
    pyr = [np.zeros((n, v.shape[1], v.shape[2], 1), F32) for v in vols_r]
    flat = [v.reshape(v.shape[0], v.shape[1] * v.shape[2]) for v in vols_r]
    return {"f1": None, "pyramid": pyr, "volumes": flat, "shape": (n, h, w)}


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 2), sizes, sizes, st.integers(1, 4), st.integers(0, 4), st.booleans(), modes, seeds)
def test_corr_lookup_half(n, h, w, levels, radius, far, mode, seed):
    """The window lookup on half volumes (float coordinates, some 1e5 px outside; 1-pixel
    maps, levels pooled away): the float interpolation rounded once; 4 levels in one launch."""
    rng = np.random.default_rng(seed)
    vols = [(rng.standard_normal((n * h * w, h >> lvl, w >> lvl)) * 2).astype(F32) for lvl in range(levels)]
    vr = [rounded(v, mode) for v in vols]
    coords = _coords(rng, n, h, w, far)
    want = corr.corr_lookup(_state(vr, n, h, w), coords, radius)
    with cuda_emulator() as ex:
        got = k_corr.corr_lookup(ex, [_up(ex, v, mode) for v in vols], ex.asarray(coords), radius)
        got = _down(ex, got, mode)
    assert got.shape == want.shape
    assert np.all(np.abs(got - want) <= half_ulp(want, mode) + 1e-6 * (1 + np.abs(want)))


def _pyramid_ref(f1, f2, levels, mode):
    """The half pass's own intermediates, in float32: f1 / sqrt(D) rounded, each pooled
    level rounded (pooled from the rounded level above), volumes as exact products."""
    n, h, w, d = f1.shape
    f1s = rounded(rounded(f1, mode).reshape(-1, d) * F32(1 / np.sqrt(d)), mode)
    lv = [rounded(f2, mode)]
    for _ in range(levels - 1):
        lv.append(rounded(pool.avg_pool2x2(lv[-1]), mode))
    vols, mags = [], []
    for f2l in lv:
        hl, wl = f2l.shape[1:3]
        a = f1s.reshape(n, h * w, d).astype(np.float64)
        b = f2l.reshape(n, hl * wl, d).astype(np.float64).transpose(0, 2, 1)
        vols.append((a @ b).reshape(n * h * w, hl, wl))
        mags.append((np.abs(a) @ np.abs(b)).reshape(n * h * w, hl, wl))
    return vols, mags


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 2), sizes, sizes, st.integers(1, 12), st.integers(1, 4), st.integers(0, 3), st.booleans(),
       modes, seeds)
def test_corr_pyramid_and_on_the_fly_half(n, h, w, d, levels, radius, far, mode, seed):
    """The volumes (half products of half features) and the on-the-fly lookup (taps stored
    in half, as the volume is) against the pass's own rounded intermediates."""
    rng = np.random.default_rng(seed)
    f1, f2 = (rng.standard_normal((n, h, w, d)).astype(F32) for _ in range(2))
    coords = _coords(rng, n, h, w, far)
    vols, mags = _pyramid_ref(f1, f2, levels, mode)
    with cuda_emulator() as ex:
        df1, df2 = _up(ex, f1, mode), _up(ex, f2, mode)
        pyr = k_corr.corr_pyramid(ex, df1, df2, levels)
        got_vols = [_down(ex, v, mode) for v in pyr]
        fly = k_corr.corr_lookup_on_the_fly(ex, df1, k_corr.pool_pyramid(ex, df2, levels), ex.asarray(coords), radius)
        fly = _down(ex, fly, mode)
    for got, want, mag in zip(got_vols, vols, mags):
        assert np.all(np.abs(got - want) <= half_ulp(want, mode) + _acc(mag, d))
    # on the fly = the lookup on the rounded volumes, up to the taps' own rounding
    vr = [rounded(v.astype(F32), mode) for v in vols]
    want = corr.corr_lookup(_state(vr, n, h, w), coords, radius)
    tap = max(float(np.abs(v).max(initial=0)) for v in vols) + max(float(m.max(initial=0)) for m in mags) * 1e-5
    assert np.all(np.abs(fly - want) <= half_ulp(want, mode) + 2 * half_ulp(tap, mode) + 1e-6 * (1 + np.abs(want)))


# -- upsample.cu -----------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(st.integers(1, 2), st.integers(1, 4), st.integers(1, 4), st.integers(1, 3), st.integers(1, 8), modes, seeds)
def test_convex_upsample_half_mask(n, h, w, c, factor, mode, seed):
    """The mask in half, the flow and the upsampled flow float32 (a half flow is converted)."""
    flow, mask = _rng_arrays(seed, (n, h, w, c), (n, h, w, 9 * factor * factor), scale=3.0)
    want = upsample.convex_upsample(flow, rounded(mask, mode), factor)
    with cuda_emulator() as ex:
        got = ex.to_host(k_upsample.convex_upsample(ex, ex.asarray(flow), _up(ex, mask, mode), factor))
    assert got.dtype == F32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * factor)  # as the float32 kernel's test


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 2), sizes, sizes, st.integers(1, 3), st.integers(1, 15), st.integers(1, 15), st.booleans(),
       modes, seeds)
def test_resize_bilinear_half(n, h, w, c, oh, ow, align, mode, seed):
    (x,) = _rng_arrays(seed, (n, h, w, c), scale=4.0)
    want = upsample.resize_bilinear(rounded(x, mode), oh, ow, align)
    with cuda_emulator() as ex:
        got = _down(ex, k_upsample.resize_bilinear(ex, _up(ex, x, mode), oh, ow, align), mode)
    assert np.all(np.abs(got - want) <= half_ulp(want, mode) + 1e-6 * (1 + np.abs(want)))


# -- sample.cu -------------------------------------------------------------------------------
@settings(max_examples=50, deadline=None)
@given(st.integers(1, 2), sizes, sizes, st.integers(1, 3), st.sampled_from(["zeros", "border"]), st.booleans(),
       modes, seeds)
def test_warps_and_sampling_half(n, h, w, c, padding, far, mode, seed):
    """The image in half, positions and flows float32 (some far outside; 1-pixel maps):
    the float computation equals the NumPy op's, so the output is its value rounded once."""
    rng = np.random.default_rng(seed)
    img = rng.standard_normal((n, h, w, c)).astype(F32) * 3
    flow = _coords(rng, n, h, w, far) - F32(max(h, w) / 2)
    pos = _coords(rng, n, 3, 2, far)
    ir = rounded(img, mode)
    with cuda_emulator() as ex:
        dimg = _up(ex, img, mode)
        warped = _down(ex, k_warp.warp(ex, dimg, ex.asarray(flow), padding), mode)
        sampled = _down(ex, k_warp.bilinear_sample(ex, dimg, ex.asarray(pos), padding), mode)
        near = np.clip(flow, -1000, 1000)  # within binary16's range
        half_flow = _down(ex, k_warp.warp(ex, dimg, _up(ex, near, mode), padding), mode)
    np.testing.assert_array_equal(warped, rounded(sample.warp(ir, flow, padding), mode))
    np.testing.assert_array_equal(sampled, rounded(sample.bilinear_sample(ir, pos[..., 0], pos[..., 1], padding),
                                                   mode))
    # a half flow is read as its float32 value (converted, not reinterpreted)
    np.testing.assert_array_equal(half_flow, rounded(sample.warp(ir, rounded(near, mode), padding), mode))


# -- frames.cu ---------------------------------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(sizes, sizes, st.booleans(), st.booleans(), st.sampled_from(["signed", "unit", "mean_std"]), modes, seeds)
def test_frames_half(h, w, gray, uint8, norm, mode, seed):
    rng = np.random.default_rng(seed)
    shape = (h, w) if gray else (h, w, 3)
    a, b = (rng.integers(0, 256, shape).astype(np.uint8 if uint8 else F32) for _ in range(2))
    ms = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)} if norm == "mean_std" else {}
    want, _ = Backend().frames(a.astype(F32), b.astype(F32), 1, norm, **ms)
    pads = tuple(int(v) for v in rng.integers(0, 3, 4))
    with cuda_emulator() as ex:
        da, db = ex.asarray(a, a.dtype), ex.asarray(b, b.dtype)
        mstd = ex.asarray(np.array(ms.get("mean", (0, 0, 0)) + ms.get("std", (1, 1, 1)), F32))
        got = _down(ex, k_glue.frames(ex, da, db, (0, 0, 0, 0), norm, mstd, k_dtype.STORAGE[mode]), mode)
        padded = _down(ex, k_glue.frames(ex, da, db, pads, norm, mstd, k_dtype.STORAGE[mode]), mode)
        padded32 = ex.to_host(k_glue.frames(ex, da, db, pads, norm, mstd))
    np.testing.assert_array_equal(got, rounded(want, mode))
    np.testing.assert_array_equal(padded, rounded(padded32, mode))


# -- strided.cu --------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 5), min_size=1, max_size=4), st.sampled_from([None, "relu", "tanh"]), modes, seeds)
def test_glue_half(shape, act_, mode, seed):
    """Copies of views (bits moved; ReLU/tanh in float), concatenation, sums, differences,
    products, scalings (x * s, x / s, per-axis on a flow-like map) and layer scales."""
    shape = tuple(shape)
    x, y, g = _rng_arrays(seed, shape, shape, shape[-1:], scale=5.0)
    xr, yr, gr = (rounded(v, mode) for v in (x, y, g))
    with cuda_emulator() as ex:
        dx, dy = _up(ex, x, mode), _up(ex, y, mode)
        view = dx[..., ::2]
        copied = _down(ex, k_glue.copy(ex, view, act=act_), mode)
        wide = k_glue.concat(ex, [dx, dy], axis=-1)
        binary = {op: _down(ex, k_glue.binary(ex, dx, dy, op), mode) for op in ("add", "sub", "mul")}
        per_channel = _down(ex, k_glue.binary(ex, dx, _up(ex, g, mode), "mul"), mode)
        scaled = _down(ex, k_glue.scale(ex, dx, 0.3), mode)
        divided = _down(ex, k_glue.scale(ex, dx, 7.0, divide=True), mode)
        added = _down(ex, k_glue.add_scaled(ex, dx, _up(ex, g, mode), dy), mode)
        flow = _up(ex, x.reshape(-1)[: (x.size // 2) * 2].reshape(-1, 2), mode) if x.size >= 2 else None
        flow_scaled = None if flow is None else _down(ex, k_glue.scale(ex, flow, (0.5, 2.5)), mode)
        wide = _down(ex, wide, mode)
        with pytest.raises(InputError, match=r"strided copy: shapes or dtypes differ"):
            k_glue.copy(ex, dx, ex.empty(shape))
    src = xr[..., ::2]
    want = {None: src, "relu": np.maximum(src, 0), "tanh": np.tanh(src)}[act_]
    tol = (half_ulp(want, mode) + 1e-6 * np.abs(want)) if act_ == "tanh" else 0
    assert np.all(np.abs(copied - rounded(want, mode)) <= tol)
    np.testing.assert_array_equal(wide, np.concatenate([xr, yr], -1))
    for op, fn in (("add", np.add), ("sub", np.subtract), ("mul", np.multiply)):
        np.testing.assert_array_equal(binary[op], rounded(fn(xr, yr), mode))
    np.testing.assert_array_equal(per_channel, rounded(xr * gr, mode))
    np.testing.assert_array_equal(scaled, rounded(xr * F32(0.3), mode))
    np.testing.assert_array_equal(divided, rounded(xr / F32(7.0), mode))
    np.testing.assert_array_equal(added, rounded(xr + gr * yr, mode))
    if flow_scaled is not None:
        fr = rounded(x.reshape(-1)[: (x.size // 2) * 2].reshape(-1, 2), mode)
        np.testing.assert_array_equal(flow_scaled, rounded(fr * np.array([0.5, 2.5], F32), mode))


def test_float32_entry_points_are_unchanged_by_dispatch():
    """float32 arrays still launch the plain entry points (no suffix), and mixed storage is
    converted to the first array's (a float32 bias on a half activation)."""
    with cuda_emulator() as ex:
        x = ex.asarray(np.arange(-3, 3, dtype=F32).reshape(2, 3))
        assert k_dtype.kernel("strided:binary", x) == "strided:binary"
        h = _up(ex, np.arange(-3, 3, dtype=F32).reshape(2, 3), "bf16")
        k_act.bias_act_(ex, h, ex.asarray(np.ones(3, F32)), "relu")
        np.testing.assert_array_equal(host_float(ex.to_host(h)), [[0, 0, 0], [1, 2, 3]])
