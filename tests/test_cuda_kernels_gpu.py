"""The device against the emulator: every kernel wrapper run on a CUDA device (CuPy
executor, NVRTC-compiled kernels, cuBLAS) and on the CPU emulator with the same inputs.
Runs only with CuPy and a CUDA device (marker `gpu`; bench/gpu_check.sh runs it)."""
from __future__ import annotations

import numpy as np
import pytest

from cvflow.backends.cuda import k_act, k_conv, k_corr, k_norm, k_patch_corr, k_upsample, k_warp
from cvflow.backends.cuda.executor import get_executor
from cvflow.testing import cuda_emulator

pytestmark = pytest.mark.gpu


def _rand(seed, *shape, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def _coords(seed, n, h, w):
    c = np.random.default_rng(seed).uniform(-6, max(h, w) + 6, (n, h, w, 2)).astype(np.float32)
    c[0, 0, 0] = (1e5, -1e5)  # far outside
    return c


def _conv(ex, x, w, b):
    return k_conv.conv2d(ex, x, k_conv.prepare_conv(ex, w, b), (2, 1), (1, 2), 1, act="leaky")


def _tconv(ex, x, w, b):
    return k_conv.conv_transpose2d(ex, x, k_conv.prepare_conv_transpose(ex, w, b), 2, 1, act="relu")


def _bn(ex, x, p):
    scale, shift = k_norm.batch_norm_affine(ex, p)
    return k_norm.batch_norm_(ex, ex.asarray(x), scale, shift, relu=True)


def _lookup(ex, f1, f2, coords):
    return k_corr.corr_lookup(ex, k_corr.corr_pyramid(ex, f1, f2, 4), coords, 4)


def _lookup_otf(ex, f1, f2, coords):
    return k_corr.corr_lookup_on_the_fly(ex, f1, k_corr.pool_pyramid(ex, f2, 4), coords, 3)


_P = {"weight": _rand(1, 16), "bias": _rand(2, 16), "running_mean": _rand(3, 16),
      "running_var": np.abs(_rand(4, 16)) + np.float32(0.5)}
CASES = {
    "conv2d": (_conv, (_rand(5, 2, 37, 29, 19), _rand(6, 24, 19, 3, 3), _rand(7, 24))),
    "conv_transpose2d": (_tconv, (_rand(8, 1, 13, 17, 40), _rand(9, 40, 34, 4, 4), _rand(10, 34))),
    "relu": (lambda ex, x: k_act.relu_(ex, ex.asarray(x)), (_rand(11, 3, 50, 7),)),
    "leaky": (lambda ex, x: k_act.leaky_relu_(ex, ex.asarray(x), 0.1), (_rand(12, 3, 50, 7),)),
    "add_relu": (lambda ex, y, x: k_act.add_relu_(ex, ex.asarray(y), ex.asarray(x)),
                 (_rand(13, 999), _rand(14, 999))),
    "instance_norm": (lambda ex, x: k_norm.instance_norm(ex, x, relu=True), (_rand(15, 2, 61, 47, 32, scale=3) + 5,)),
    "batch_norm": (_bn, (_rand(16, 2, 9, 11, 16), _P)),
    "channel_norm": (k_norm.channel_norm, (_rand(17, 1, 33, 35, 3),)),
    "corr_lookup": (_lookup, (_rand(18, 1, 23, 31, 64), _rand(19, 1, 23, 31, 64), _coords(20, 1, 23, 31))),
    "corr_lookup_on_the_fly": (_lookup_otf,
                               (_rand(21, 1, 23, 31, 64), _rand(22, 1, 23, 31, 64), _coords(23, 1, 23, 31))),
    "convex_upsample": (lambda ex, f, m: k_upsample.convex_upsample(ex, f, m, 8),
                        (_rand(24, 1, 11, 13, 2, scale=5), _rand(25, 1, 11, 13, 576, scale=2))),
    "resize_bilinear": (lambda ex, x: k_upsample.resize_bilinear(ex, x, 45, 71, True), (_rand(26, 2, 11, 17, 2),)),
    "patch_correlation": (k_patch_corr.patch_correlation, (_rand(27, 1, 24, 32, 64), _rand(28, 1, 24, 32, 64))),
    "resample2d": (k_warp.resample2d, (_rand(29, 1, 40, 52, 3), _rand(30, 1, 40, 52, 2, scale=9))),
    "warp_zeros": (k_warp.bilinear_warp_zeros, (_rand(31, 1, 40, 52, 3), _rand(32, 1, 40, 52, 2, scale=9))),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_device_matches_emulator(name):
    fn, args = CASES[name]
    dev = get_executor()
    got = dev.to_host(fn(dev, *args))
    dev.synchronize()
    with cuda_emulator() as emu:
        want = fn(emu, *args)
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * scale)
