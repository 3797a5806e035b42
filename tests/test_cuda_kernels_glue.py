"""The glue kernels (kernels/strided.cu, kernels/frames.cu) and the fused gathers of the
RAFT family (im2col_parts, the four-level lookup, convolutions written over their input)
equal the NumPy expressions and kernel sequences they replace."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from conftest import randn
from hypothesis import given, settings
from hypothesis import strategies as st

from cvflow.backends.base import Backend
from cvflow.backends.cuda import k_conv, k_corr, k_glue
from cvflow.backends.cuda.backend import CudaBackend
from cvflow.backends.cuda.executor import launch_1d


# -- the glue kernels equal the NumPy expressions they replace -----------------------------
@settings(max_examples=15, deadline=None)
@given(h=st.integers(1, 19), w=st.integers(1, 19), multiple=st.sampled_from([1, 8]), gray=st.booleans(),
       uint8=st.booleans(), norm=st.sampled_from(["signed", "unit", "mean_std"]), seed=st.integers(0, 99))
def test_frames_kernel_equals_the_numpy_preparation(ex, h, w, multiple, gray, uint8, norm, seed):
    rng = np.random.default_rng(seed)
    shape = (h, w) if gray else (h, w, 3)
    a, b = (rng.integers(0, 256, shape).astype(np.uint8 if uint8 else np.float32) for _ in range(2))
    if not uint8:
        a += rng.random(shape, dtype=np.float32)
    ms = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)} if norm == "mean_std" else {}
    want, wpads = Backend().frames(a.astype(np.float32), b.astype(np.float32), multiple, norm, **ms)
    be = CudaBackend(ex)
    got, pads = be.frames(ex.asarray(a, a.dtype), ex.asarray(b, b.dtype), multiple, norm, **ms)
    assert pads == wpads
    np.testing.assert_array_equal(ex.to_host(got), want)


@settings(max_examples=15, deadline=None)
@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=5), seed=st.integers(0, 99), act=st.booleans())
def test_strided_copies_and_concatenation_equal_numpy(ex, shape, seed, act):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(tuple(shape) + (5,)).astype(np.float32)
    d = ex.asarray(x)
    view = d[..., ::-1, 1:4]
    host = x[..., ::-1, 1:4]
    got = k_glue.copy(ex, view, act="relu" if act else None)
    np.testing.assert_array_equal(ex.to_host(got), np.maximum(host, 0) if act else host)
    np.testing.assert_array_equal(ex.to_host(k_glue.concat(ex, [view, d[..., :2]], axis=-1)),
                                  np.concatenate([host, x[..., :2]], axis=-1))
    np.testing.assert_array_equal(ex.to_host(k_glue.binary(ex, d, d[..., ::-1], "sub")), x - x[..., ::-1])
    np.testing.assert_array_equal(ex.to_host(k_glue.scale(ex, view, 0.25)), host * np.float32(0.25))


@pytest.mark.parametrize("seed", [0, 1])
def test_im2col_parts_applies_pending_epilogues_of_concatenated_views(ex, seed):
    rng = np.random.default_rng(seed)
    a, b = randn(rng, 2, 5, 6, 7), randn(rng, 2, 5, 6, 3)
    bias = randn(rng, 4)
    layer = k_conv.prepare_conv(ex, randn(rng, 4, 8, 3, 3), randn(rng, 4))
    da, db = ex.asarray(a), ex.asarray(b)
    parts = [k_conv.Pending(da[..., 1:5], ex.asarray(bias), "relu"), db, da[..., :1]]
    got = k_conv.conv2d_parts(ex, parts, layer, padding=1)
    cat = np.concatenate([np.maximum(a[..., 1:5] + bias, 0), b, a[..., :1]], axis=-1)
    want = k_conv.conv2d(ex, ex.asarray(cat), replace(layer, bias=None), padding=1)
    np.testing.assert_array_equal(ex.to_host(got), ex.to_host(want))


def test_four_level_lookup_equals_the_level_by_level_kernel(ex):
    rng = np.random.default_rng(3)
    f1, f2 = ex.asarray(randn(rng, 1, 16, 16, 8)), ex.asarray(randn(rng, 1, 16, 16, 8))
    pyr = k_corr.corr_pyramid(ex, f1, f2, 4)
    coords = ex.asarray(rng.uniform(-3, 19, (1, 16, 16, 2)).astype(np.float32))
    got = ex.to_host(k_corr.corr_lookup(ex, pyr, coords, 3))
    want = ex.empty((1, 16, 16, 4 * 49))
    for lvl, vol in enumerate(pyr):
        launch_1d(ex, "corr_lookup:raft_corr_lookup", 256 * 49, vol, coords, want, np.int32(256),
                  *(np.int32(d) for d in vol.shape[1:]), np.int32(3), np.int32(lvl), np.int32(4),
                  np.float32(0.5 ** lvl))
    np.testing.assert_array_equal(got, ex.to_host(want))
    assert got.shape == (1, 16, 16, 4 * 49)


@pytest.mark.parametrize("hw, ch", [((9, 11), 5), ((4, 30), 3)])
def test_convolution_over_its_input_equals_a_new_buffer(ex, monkeypatch, hw, ch):
    rng = np.random.default_rng(4)
    x = randn(rng, 2, *hw, ch)
    layer = k_conv.prepare_conv(ex, randn(rng, ch, ch, 3, 3), randn(rng, ch))
    monkeypatch.setattr(k_conv, "COL_BYTES", 4 * 9 * ch * (hw[1] + 4))  # several chunks, each > the lag
    want = ex.to_host(k_conv.conv2d(ex, ex.asarray(x), layer, padding=1, act="relu"))
    d = ex.asarray(x)
    got = k_conv.conv2d_(ex, d, layer, padding=1, act="relu")
    assert got.ctypes.data == d.ctypes.data  # written over its input
    np.testing.assert_array_equal(ex.to_host(got), want)
