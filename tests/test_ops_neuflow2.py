"""NeuFlow v2's backend ops against plain NumPy: conv + BatchNorm folded at load
(`Backend.conv_bn`, `cvflow.ops.fold`), 2x2 average pooling and hardtanh, on the CPU
backend and on the CUDA backend's emulator; and the model's position channels."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import randn
from hypothesis import given, settings
from hypothesis import strategies as st

from cvflow.backends.cpu import CPUBackend
from cvflow.backends.cuda.backend import CudaBackend
from cvflow.errors import InputError
from cvflow.models import neuflow2 as nf
from cvflow.ops import conv, norm, pool
from cvflow.ops.fold import fold_conv_bn

seeds = st.integers(0, 2**31 - 1)


def _bn(rng, c):
    return {"weight": 1 + 0.1 * randn(rng, c), "bias": 0.05 * randn(rng, c),
            "running_mean": 0.1 * randn(rng, c), "running_var": 1 + rng.random(c).astype(np.float32),
            "num_batches_tracked": np.zeros((), np.float32)}


def _backends(ex):
    return [CPUBackend(), CudaBackend(ex)]


@settings(max_examples=25, deadline=None)
@given(h=st.integers(1, 9), w=st.integers(1, 9), c=st.integers(1, 6), o=st.integers(1, 6),
       k=st.sampled_from([1, 3, 6, 8]), stride=st.integers(1, 4), bias=st.booleans(), act=st.sampled_from([None, "relu", "leaky"]), seed=seeds)
def test_conv_bn_matches_conv_then_batch_norm(ex, h, w, c, o, k, stride, bias, act, seed):
    rng = np.random.default_rng(seed)
    pad = k // 2
    if (h + 2 * pad - k) < 0 or (w + 2 * pad - k) < 0:
        return
    x = randn(rng, 2, h, w, c)
    layer = {"weight": randn(rng, o, c, k, k) * np.float32(0.3)}
    if bias:
        layer["bias"] = randn(rng, o)
    bn = _bn(rng, o)
    want = norm.batch_norm(conv.conv2d(x, dict(layer), stride, pad), bn)
    if act == "relu":
        want = np.maximum(want, 0)
    elif act == "leaky":
        want = np.where(want > 0, want, want * np.float32(0.1))
    for be in _backends(ex):
        placed = be.place({**{f"c.{n}": v for n, v in layer.items()}, **{f"n.{n}": v for n, v in bn.items()}})
        got = be.to_host(be.conv_bn(be.asarray(x), placed["c"], placed["n"], stride=stride, padding=pad, act=act))
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=be.name)
        assert set(placed["c"]) == set(layer)  # nothing derived was written into the weights
        assert be.prepared_count >= 1


def test_fold_conv_bn_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(InputError, match=r"conv weight must be \(O, C, kh, kw\), got shape \(3, 3\)"):
        fold_conv_bn(np.zeros((3, 3), np.float32), None, _bn(rng, 3))
    with pytest.raises(InputError, match=r"batch norm 'running_var' must be \(4,\) for a conv with 4 outputs, "
                                         r"got shape \(3,\)"):
        fold_conv_bn(np.zeros((4, 2, 1, 1), np.float32), None, {**_bn(rng, 4), "running_var": np.ones(3)})


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 2), h=st.integers(1, 11), w=st.integers(1, 11), c=st.integers(1, 5), seed=seeds)
def test_avg_pool2x2_on_both_backends(ex, n, h, w, c, seed):
    x = randn(np.random.default_rng(seed), n, h, w, c)
    want = x[:, :h // 2 * 2, :w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c).astype(np.float64).mean(axis=(2, 4))
    for be in _backends(ex):
        got = be.to_host(be.avg_pool2x2(be.asarray(x)))
        assert got.shape == (n, h // 2, w // 2, c)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=be.name)
    np.testing.assert_array_equal(CPUBackend().avg_pool2x2(x), pool.avg_pool2x2(x))


@settings(max_examples=25, deadline=None)
@given(h=st.integers(1, 6), w=st.integers(1, 6), c=st.integers(3, 8), seed=seeds)
def test_hardtanh_of_a_view(ex, h, w, c, seed):
    x = randn(np.random.default_rng(seed), 1, h, w, c) * np.float32(6)
    for be in _backends(ex):
        got = be.to_host(be.hardtanh(be.asarray(x)[..., 2:], -4, 4))
        np.testing.assert_array_equal(got, np.minimum(np.maximum(x[..., 2:], -4), 4))
        assert got.dtype == np.float32


def test_position_channels_are_raw_and_y_first():
    pos = nf.position_channels(CPUBackend(), 2, 3, 5)
    assert pos.shape == (2, 3, 5, 2) and pos.dtype == np.float32
    np.testing.assert_array_equal(pos[0, :, 0, 0], [-1.5, -0.5, 0.5])              # y - h/2
    np.testing.assert_array_equal(pos[1, 0, :, 1], [-2.5, -1.5, -0.5, 0.5, 1.5])   # x - w/2
