"""Normalisation layers in inference form, NHWC."""
from __future__ import annotations

import numpy as np

from cvflow.arrays import get_xp
from cvflow.ops.act import relu_
from cvflow.ops.parallel import map_spans

try:  # a runtime dependency; bench/gpu_check.sh may run where only NumPy and CuPy are
    import cv2
except ImportError:
    cv2 = None


def batch_norm(x, p, eps=1e-5):
    """BatchNorm2d with running statistics. x (N,H,W,C); p: weight, bias, running_mean, running_var (C,)."""
    scale, shift = batch_norm_affine(p, eps)
    out = x * scale.astype(x.dtype)
    out += shift.astype(x.dtype)
    return out


def batch_norm_(x, p, eps=1e-5, relu=False):
    """`batch_norm` in place on x (C-contiguous, owned by the caller), then a ReLU if
    `relu`; chunk by chunk, so the ops share one pass over memory."""
    xp = get_xp(x)
    scale, shift = batch_norm_affine(p, eps)
    scale, shift = scale.astype(x.dtype), shift.astype(x.dtype)
    if not x.flags.c_contiguous:  # a reshape would copy: plain in-place passes
        x *= scale
        x += shift
        return relu_(x) if relu else x
    rows = x.reshape(-1, x.shape[-1])

    def piece(a, b):
        t = rows[a:b]
        t *= scale
        t += shift
        if relu:
            relu_(t)

    map_spans(piece, rows.shape[0], rows.shape[1], xp)
    return x


def batch_norm_affine(p, eps=1e-5):
    """Inference BatchNorm as y = x * scale + shift: (scale, shift), each (C,)."""
    xp = get_xp(p["weight"])
    scale = p["weight"] / xp.sqrt(p["running_var"] + p["running_var"].dtype.type(eps))
    return scale, p["bias"] - p["running_mean"] * scale


def instance_norm(x, eps=1e-5, relu=False, inplace=False):
    """InstanceNorm2d without affine or running stats: per sample and channel over H, W.
    `relu` applies a ReLU to the result (fused: one pass less over a large map);
    `inplace` writes the result over x (a C-contiguous buffer the caller owns).

    Statistics accumulate in float64 as PyTorch's CPU kernel does (mean rounded to x's
    dtype before centring); recurrent models (RAFT) amplify float32-sum differences.
    Every pass runs in cache-sized pieces shared among threads; the float64 sums are
    cv2.reduce's (same result as a float64 reduction, at a fraction of its cost).
    """
    xp = get_xp(x)
    n, h, w, c = x.shape
    m = h * w
    flat = x.reshape(n, m, c)
    out = flat if inplace and x.flags.c_contiguous else xp.empty_like(flat)
    for i in range(n):
        _instance_norm_map(flat[i], out[i], eps, relu)
    return out.reshape(x.shape)


def _sums64(a):
    """Column sums (C,) of a (M, C) float32 array, accumulated in float64.

    On NumPy, cv2.reduce (a double accumulator per column, as PyTorch's kernel) over
    rows of at least 32 values: far faster than a float64 NumPy reduction."""
    xp = get_xp(a)
    if xp is not np or cv2 is None:
        return a.sum(axis=0, dtype=xp.float64)
    m, c = a.shape
    k = 1
    while c * k < 32 and m % (2 * k) == 0:  # short rows reduce slowly: fold k of them into one
        k *= 2
    s = cv2.reduce(xp.ascontiguousarray(a).reshape(m // k, c * k), 0, cv2.REDUCE_SUM, dtype=cv2.CV_64F)
    return s.reshape(k, c).sum(axis=0)


def _instance_norm_map(x, out, eps, relu):
    """`instance_norm` of one (M, C) map into out (C-contiguous, may be x)."""
    xp = get_xp(x)
    m, c = x.shape
    k = 1
    while c * k < 1024 and m % (2 * k) == 0:  # rows of >= 1024 values: NumPy's loops run long
        k *= 2
    rows, width = m // k, c * k
    xw, ow = x.reshape(rows, width), out.reshape(rows, width)

    def fold(sums):                                 # (width,) partial sums -> (C,)
        return sum(sums).reshape(k, c).sum(axis=0)

    mean = (fold(map_spans(lambda a, b: _sums64(xw[a:b]), rows, width, xp)) / m).astype(x.dtype)
    mean_w = xp.tile(mean, k)

    def squares(a, b):
        d = xw[a:b] - mean_w
        d *= d
        return _sums64(d)

    var = fold(map_spans(squares, rows, width, xp)) / m
    alpha_w = xp.tile((1 / xp.sqrt(var + eps)).astype(x.dtype), k)

    def normalise(a, b):
        o = ow[a:b]
        xp.subtract(xw[a:b], mean_w, out=o)
        o *= alpha_w
        if relu:
            relu_(o)

    map_spans(normalise, rows, width, xp)


def layer_norm(x, p, eps=1e-5):
    """LayerNorm over the last axis with affine weight and bias."""
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    var = (centred * centred).mean(axis=-1, keepdims=True)
    return centred / get_xp(x).sqrt(var + x.dtype.type(eps)) * p["weight"] + p["bias"]


def channel_norm(x):
    """L2 norm over channels (FlowNet2's ChannelNorm): (N, H, W, C) -> (N, H, W, 1)."""
    return get_xp(x).sqrt((x * x).sum(axis=-1, keepdims=True))
