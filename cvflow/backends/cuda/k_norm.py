"""Normalisation layers on the CUDA backend (kernels/norm.cu), NHWC, float32 or half
storage (`k_dtype`: the typed entry points; statistics and affines stay float32).

Same results as cvflow/ops/norm.py: instance norm's statistics accumulate in float64
(mean rounded to float32 before centring, squares rounded to float32), batch norm is
x*scale + shift with its two roundings, channel norm sqrt(sum_c x^2).
"""
from __future__ import annotations

import numpy as np

from cvflow.backends.cuda.executor import contiguous, f64, i32, launch_1d
from cvflow.backends.cuda.k_dtype import kernel, like, storage
from cvflow.backends.cuda.k_glue import rows
from cvflow.errors import InputError

_CHUNK = 256  # pixels per partial sum of instance norm's statistics


def instance_norm(ex, x, eps=1e-5, relu=False, inplace=False):
    """InstanceNorm2d without affine or running stats, per sample and channel over H, W.

    x: (N, H, W, C) float32 (or half storage). relu: a ReLU after normalising. inplace: write over x (then
    x must be C-contiguous). Returns (N, H, W, C).
    """
    if not inplace:
        x = contiguous(ex, x, storage(x))
    n, h, w, c = x.shape
    m = h * w
    chunks = max(1, -(-m // _CHUNK))
    partial = ex.empty((n, chunks, c), np.float64)
    mean, alpha = ex.empty((n, c)), ex.empty((n, c))
    for stage in (0, 1):
        launch_1d(ex, kernel("norm:inorm_partial", x), n * chunks * c, x, mean, partial, i32(n), i32(m), i32(c),
                  i32(_CHUNK), i32(chunks), i32(stage))
        launch_1d(ex, "norm:inorm_stats", n * c, partial, mean, alpha, i32(n), i32(m), i32(c),
                  i32(chunks), i32(stage), f64(eps))
    out = x if inplace else ex.empty(x.shape, x.dtype)
    launch_1d(ex, kernel("norm:inorm_apply", x), x.size, x, mean, alpha, out, i32(n), i32(m), i32(c), i32(relu))
    return out


def batch_norm_affine(ex, p, eps=1e-5):
    """Inference BatchNorm2d as (scale, shift), each (C,) float32 on the executor, from
    p's weight, bias, running_mean, running_var (host or device); as the NumPy op."""
    keys = ("weight", "bias", "running_mean", "running_var")
    host = {k: np.asarray(ex.to_host(p[k]), dtype=np.float32) for k in keys}
    scale = host["weight"] / np.sqrt(host["running_var"] + np.float32(eps))
    shift = host["bias"] - host["running_mean"] * scale
    return ex.asarray(scale), ex.asarray(shift)


def batch_norm_(ex, x, scale, shift, relu=False):
    """x = x*scale + shift in place (x C-contiguous (..., C)), then a ReLU if relu. Returns x."""
    launch_1d(ex, kernel("norm:scale_shift", x), x.size, x, scale, shift, i32(x.size), i32(x.shape[-1]), i32(relu))
    return x


def channel_norm(ex, x):
    """FlowNet2's ChannelNorm: (N, H, W, C) -> (N, H, W, 1), the L2 norm over channels."""
    x = contiguous(ex, x, storage(x))
    out = ex.empty(x.shape[:-1] + (1,), x.dtype)
    launch_1d(ex, kernel("norm:channel_norm", x), out.size, x, out, i32(out.size), i32(x.shape[-1]))
    return out


def channel_norm_diff(ex, a, b):
    """FlowNet2's brightness error: (N, H, W, C) a and b -> (N, H, W, 1), sqrt(sum_c (a - b)^2),
    as channel_norm(a - b). Channel slices of wider maps are read in place. In a's storage
    (float32 or half: the sum in float, the norm rounded once); b is converted to it if not."""
    if tuple(a.shape) != tuple(b.shape):
        raise InputError(f"a and b must have one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    (ba, sa, oa), (bb, sb, ob) = rows(ex, a), rows(ex, b)
    if bb.dtype != ba.dtype:
        bb = like(ex, bb, ba)  # the whole buffer, so b's stride and offset still hold
    out = ex.empty(tuple(a.shape[:-1]) + (1,), ba.dtype)
    launch_1d(ex, kernel("norm:channel_norm_diff", ba), out.size, ba, bb, out, i32(out.size), i32(a.shape[-1]),
              i32(sa), i32(oa), i32(sb), i32(ob))
    return out
