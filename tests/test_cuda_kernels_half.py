"""Half-precision kernels (issue 20) on the emulator: kernels/dtype.h's storage types, the
conversions (kernels/convert.cu) and the typed entry points (<name>_f16 / <name>_bf16),
each against the NumPy op evaluated in float32 on the rounded inputs, so that the
rounding of the stored output is all that differs."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from cvflow.backends.cuda import k_convnext, k_dtype, k_norm
from cvflow.backends.cuda.executor import i32, launch_1d
from cvflow.ops import depthwise, norm, pool
from cvflow.testing import cuda_emulator

MODES = ("fp16", "bf16")


def _exact_round(x, bits, emin):
    """Round float32 values to `bits` explicit mantissa bits (nearest, ties to even) in
    float64 rational arithmetic: the definition, independent of the bit tricks. emin: the
    format's smallest normal exponent (frexp convention), below which the step is fixed."""
    x = np.asarray(x, np.float64)
    m, e = np.frexp(x)
    step = np.ldexp(1.0, np.maximum(e, emin) - 1 - bits)
    with np.errstate(over="ignore"):
        return (np.round(x / step) * step).astype(np.float32)


def rounded(x, mode):
    """float32 x as `mode` stores it, back in float32 (fp16: NumPy's float16 cast)."""
    x = np.asarray(x, np.float32)
    with np.errstate(over="ignore"):  # beyond binary16's range: inf, as the device stores it
        return x.astype(np.float16).astype(np.float32) if mode == "fp16" else k_dtype.bf16_float(k_dtype.bf16_bits(x))


def host_storage(x, mode):
    with np.errstate(over="ignore"):
        return np.asarray(x, np.float32).astype(np.float16) if mode == "fp16" else k_dtype.bf16_bits(x)


def host_float(x):
    return x.astype(np.float32) if x.dtype == np.float16 else k_dtype.bf16_float(x)


def half_ulp(v, mode):
    """Half a unit in the last place of `mode` at |v| (the largest rounding error of a store)."""
    bits, emin = (10, -13) if mode == "fp16" else (7, -125)
    _, e = np.frexp(np.abs(np.asarray(v, np.float64)))
    return np.ldexp(0.5, np.maximum(e, emin) - 1 - bits)


finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float32, st.integers(1, 300), elements=finite32), st.sampled_from(MODES))
def test_conversions_round_to_nearest_even(x, mode):
    with cuda_emulator() as ex:
        half = k_dtype.to_storage(ex, ex.asarray(x), mode)
        back = ex.to_host(k_dtype.to_float(ex, half))
        half = ex.to_host(half)
    with np.errstate(over="ignore"):
        want = _exact_round(x, 10, -13) if mode == "fp16" else _exact_round(x, 7, -125)
    if mode == "fp16":
        want = np.where(np.abs(want) > 65504, np.copysign(np.inf, x), want)  # beyond binary16's range
    np.testing.assert_array_equal(back, want)
    np.testing.assert_array_equal(back, rounded(x, mode))
    np.testing.assert_array_equal(half, host_storage(x, mode))  # the host conversion is the same


def test_conversion_specials():
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1 + 2.0**-11, 1 + 3 * 2.0**-11, 2.0**-24, 2.0**-25,
                  1 + 2.0**-8, 1 + 3 * 2.0**-8], np.float32)
    with cuda_emulator() as ex:
        f16 = ex.to_host(k_dtype.to_float(ex, k_dtype.to_storage(ex, ex.asarray(x), "fp16")))
        bf = ex.to_host(k_dtype.to_float(ex, k_dtype.to_storage(ex, ex.asarray(x), "bf16")))
    assert np.isnan(f16[0]) and np.isnan(bf[0])
    assert list(f16[1:5]) == [np.inf, -np.inf, 0.0, 0.0] and np.signbit(f16[4])
    assert f16[5] == 1.0 and f16[6] == 1 + 2.0**-9  # ties to even
    assert f16[7] == 2.0**-24 and f16[8] == 0.0       # smallest subnormal; its half ties to even (0)
    assert bf[9] == 1.0 and bf[10] == 1 + 2.0**-6  # bfloat16: 7 bits, ties to even


shapes = st.tuples(st.integers(1, 2), st.integers(1, 9), st.integers(1, 9), st.integers(1, 7))


@settings(max_examples=40, deadline=None)
@given(shapes, st.sampled_from(MODES), st.booleans(), st.floats(-20, 20), st.integers(0, 2**31))
def test_instance_norm_half(shape, mode, relu, offset, seed):
    """Includes 1-pixel maps (H = W = 1: zero variance, the output is 0)."""
    x = (np.random.default_rng(seed).standard_normal(shape) * 3 + offset).astype(np.float32)
    xr = rounded(x, mode)
    want = norm.instance_norm(xr, relu=relu)
    stored = host_storage(x, mode)
    with cuda_emulator() as ex:
        got = host_float(ex.to_host(k_norm.instance_norm(ex, ex.asarray(stored, stored.dtype), relu=relu)))
    assert np.all(np.abs(got - want) <= half_ulp(want, mode) + 2e-6 * max(1, abs(offset)))


@settings(max_examples=40, deadline=None)
@given(shapes, st.sampled_from(MODES), st.booleans(), st.integers(0, 2**31))
def test_batch_norm_half(shape, mode, relu, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 4).astype(np.float32)
    c = shape[-1]
    p = {"weight": rng.standard_normal(c).astype(np.float32), "bias": rng.standard_normal(c).astype(np.float32),
         "running_mean": rng.standard_normal(c).astype(np.float32),
         "running_var": rng.uniform(0.1, 2, c).astype(np.float32)}
    want = norm.batch_norm_(rounded(x, mode), p, relu=relu)
    stored = host_storage(x, mode)
    with cuda_emulator() as ex:
        scale, shift = k_norm.batch_norm_affine(ex, p)
        buf = ex.asarray(stored, stored.dtype)
        assert k_norm.batch_norm_(ex, buf, scale, shift, relu) is buf
        got = host_float(ex.to_host(buf))
    np.testing.assert_array_equal(got, rounded(want, mode))  # the fp32 kernel equals NumPy bit for bit


@settings(max_examples=40, deadline=None)
@given(shapes, st.sampled_from(MODES), st.integers(0, 2**31))
def test_channel_norm_half(shape, mode, seed):
    x = (np.random.default_rng(seed).standard_normal(shape) * 5).astype(np.float32)
    want = norm.channel_norm(rounded(x, mode))
    stored = host_storage(x, mode)
    with cuda_emulator() as ex:
        got = host_float(ex.to_host(k_norm.channel_norm(ex, ex.asarray(stored, stored.dtype))))
    assert got.shape == want.shape
    assert np.all(np.abs(got - want) <= half_ulp(want, mode) + 1e-6 * np.abs(want))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 2), st.integers(1, 5), st.integers(1, 5), st.integers(1, 4), st.sampled_from(MODES),
       st.integers(0, 2**31))
def test_brightness_error_half(n, h, w, c, mode, seed):
    """channel_norm_diff's typed entry points: channel slices of one half map (read in
    place), 1-pixel maps; differences, squares and the sum in float as the NumPy op on the
    rounded inputs, so the stored norm is its value rounded once. A float32 b is converted
    to a's storage first."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, h, w, 2 * c + 1)) * 5).astype(np.float32)
    y = (rng.standard_normal((n, h, w, c)) * 5).astype(np.float32)
    xr = rounded(x, mode)
    want = rounded(norm.channel_norm(xr[..., 1:c + 1] - xr[..., c + 1:]), mode)
    want_mixed = rounded(norm.channel_norm(xr[..., 1:c + 1] - rounded(y, mode)), mode)
    stored = host_storage(x, mode)
    with cuda_emulator() as ex:
        wide = ex.asarray(stored, stored.dtype)
        a, b = wide[..., 1:c + 1], wide[..., c + 1:]
        assert k_dtype.kernel("norm:channel_norm_diff", a).endswith("_f16" if mode == "fp16" else "_bf16")
        out = k_norm.channel_norm_diff(ex, a, b)
        assert out.dtype == stored.dtype and out.shape == (n, h, w, 1)
        got = host_float(ex.to_host(out))
        mixed = host_float(ex.to_host(k_norm.channel_norm_diff(ex, a, ex.asarray(y))))
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(mixed, want_mixed)


@settings(max_examples=40, deadline=None)
@given(shapes, st.sampled_from(MODES), st.integers(0, 2**31))
def test_avg_pool_half(shape, mode, seed):
    """1-pixel and odd maps: the trailing row/column is dropped (H = 1 gives an empty map)."""
    x = (np.random.default_rng(seed).standard_normal(shape) * 10).astype(np.float32)
    want = pool.avg_pool2x2(rounded(x, mode))
    stored = host_storage(x, mode)
    with cuda_emulator() as ex:
        got = ex.to_host(k_dtype.avg_pool2x2(ex, ex.asarray(stored, stored.dtype)))
    assert got.dtype == stored.dtype and got.shape == want.shape
    np.testing.assert_array_equal(host_float(got), rounded(want, mode))


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 2), st.integers(1, 8), st.integers(1, 8), st.integers(1, 6), st.sampled_from([1, 3, 7]),
       st.booleans(), st.sampled_from(MODES), st.integers(0, 2**31))
def test_depthwise_half(n, h, w, c, k, bias, mode, seed):
    """Weights stored in the same half type; 1-pixel maps with 7x7 taps (all but one tap
    outside the map)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, h, w, c)).astype(np.float32)
    p = {"weight": rng.standard_normal((c, 1, k, k)).astype(np.float32)}
    if bias:
        p["bias"] = rng.standard_normal(c).astype(np.float32)
    pr = {key: rounded(v, mode) for key, v in p.items()}
    want = depthwise.depthwise_conv2d(rounded(x, mode), pr, k // 2)
    stored = host_storage(x, mode)
    with cuda_emulator() as ex:
        layer = k_convnext.prepare_depthwise(ex, pr["weight"], pr.get("bias"))
        got = ex.to_host(k_convnext.depthwise_conv2d(ex, ex.asarray(stored, stored.dtype), layer, p, k // 2))
    assert got.dtype == stored.dtype and got.shape == want.shape
    got = host_float(got)
    assert np.all(np.abs(got - want) <= half_ulp(want, mode) + 1e-5 * (1 + np.abs(want)))


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 20), st.integers(1, 200), st.floats(-20, 20), st.sampled_from(MODES), st.integers(0, 2**31))
def test_layer_norm_half(rows, c, shift, mode, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((rows, c)) + shift).astype(np.float32)
    p = {"weight": rounded(rng.standard_normal(c), mode), "bias": rounded(rng.standard_normal(c), mode)}
    want = norm.layer_norm(rounded(x, mode), p, 1e-6)
    stored = host_storage(x, mode)
    with cuda_emulator() as ex:
        got = ex.to_host(k_convnext.layer_norm(ex, ex.asarray(stored, stored.dtype), ex.asarray(p["weight"]),
                                               ex.asarray(p["bias"]), 1e-6))
    assert got.dtype == stored.dtype
    got = host_float(got)
    assert np.all(np.abs(got - want) <= half_ulp(want, mode) + 1e-4 * (1 + np.abs(want)))


def test_typed_entry_points_check_their_storage_type():
    from cvflow.errors import DeviceError

    with cuda_emulator() as ex:
        x = ex.zeros((4,), np.float16)
        with pytest.raises(DeviceError, match=r"pool:avg_pool2x2_bf16 argument 0 must be a cvf_bf16 array, "
                                              r"got DeviceArray float16"):
            ex.launch("pool:avg_pool2x2_bf16", (1,), (32,), (x, x, i32(1), i32(2), i32(2), i32(1)))
        with pytest.raises(DeviceError, match=r"no kernel storage type for dtype float64"):
            k_dtype.suffix(ex.zeros((2,), np.float64))
        with pytest.raises(DeviceError, match=r"matmul's operands must share one storage type, got float16 and "
                                              r"float32"):
            ex.matmul(ex.zeros((2, 2), np.float16), ex.zeros((2, 2)))
        launch_1d(ex, "convert:f32_to_f16", 0, ex.zeros((0,)), ex.zeros((0,), np.float16), i32(0))
