"""Convolutions on the CUDA backend: im2col kernel + matrix product (cuBLAS) + fused
bias/activation; transposed convolutions by one product + a col2im gather kernel.

Same contract as cvflow/ops/conv.py and cvflow/ops/conv_transpose.py (groups=1): NHWC
float32 activations, weights in PyTorch layout, zero padding. Weights are prepared once
per layer (:func:`prepare_conv`, :func:`prepare_conv_transpose`): the prepared layer
holds the device weight matrix, never written into the user's weight dict.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cvflow.backends.cuda.executor import contiguous, f32, i32, launch_1d
from cvflow.backends.cuda.k_act import act_code, bias_act_
from cvflow.errors import InputError

# Bound on one chunk's column buffer (rows * kh*kw*C float32): products stay large (>= 14k rows for
# 3x3x128 inputs), memory bounded (256 MiB chunks added ~190 MiB to RAFT's peak at 4K).
COL_BYTES = 64 << 20


@dataclass
class ConvLayer:
    """A prepared convolution: `mat` (kh*kw*I, O) for conv2d, (I, kh*kw*O) for the
    transposed form; `bias` (O,) or None; shapes in PyTorch's names."""

    mat: object
    bias: object
    in_channels: int
    out_channels: int
    kh: int
    kw: int
    transposed: bool = False


def _pair(v):
    return (int(v), int(v)) if np.isscalar(v) else tuple(int(a) for a in v)


def _destination(ex, out, shape):
    if out is None:
        return ex.empty(shape)
    if tuple(out.shape) != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise InputError(f"`out` must be a C-contiguous float32 array of shape {shape}, got "
                         f"{tuple(out.shape)} {out.dtype}")
    return out


def _host(ex, a):
    return None if a is None else np.asarray(ex.to_host(a), dtype=np.float32)


def prepare_conv(ex, w, b=None):
    """Conv2d weight (O, I, kh, kw) and bias (O,) (host or device arrays) -> ConvLayer
    whose matrix (kh*kw*I, O) rows follow im2col's (i, j, c) order."""
    w = _host(ex, w)
    if w.ndim != 4:
        raise InputError(f"conv weight must be (O, I, kh, kw), got shape {w.shape}")
    o, c, kh, kw = w.shape
    mat = ex.asarray(np.ascontiguousarray(w.transpose(2, 3, 1, 0).reshape(-1, o)))
    bias = None if b is None else ex.asarray(_host(ex, b).reshape(o))
    return ConvLayer(mat, bias, c, o, kh, kw)


def prepare_conv_transpose(ex, w, b=None):
    """ConvTranspose2d weight (I, O, kh, kw) and bias (O,) -> ConvLayer with matrix (I, kh*kw*O)."""
    w = _host(ex, w)
    if w.ndim != 4:
        raise InputError(f"transposed conv weight must be (I, O, kh, kw), got shape {w.shape}")
    c, o, kh, kw = w.shape
    mat = ex.asarray(np.ascontiguousarray(w.transpose(0, 2, 3, 1).reshape(c, -1)))
    bias = None if b is None else ex.asarray(_host(ex, b).reshape(o))
    return ConvLayer(mat, bias, c, o, kh, kw, transposed=True)


def _input(ex, x, layer, op):
    """x made C-contiguous, after checking its channels (last axis) match the layer's."""
    x = contiguous(ex, x)
    if x.shape[-1] != layer.in_channels:
        raise InputError(f"{op}: input has {x.shape[-1]} channels, the layer takes {layer.in_channels}")
    return x


def conv2d(ex, x, layer, stride=1, padding=0, dilation=1, act=None, slope=0.1, out=None):
    """Convolution (cross-correlation, as PyTorch), zero padding, then bias and act.

    x: (N, H, W, I) float32 (made contiguous). act: None, "relu" or "leaky" (slope).
    out: optional C-contiguous (N, Ho, Wo, O) float32 destination.
    Returns (N, Ho, Wo, O), Ho = (H + 2*ph - dh*(kh-1) - 1) // sh + 1.
    """
    if layer.transposed:
        raise InputError("conv2d needs a layer from prepare_conv, got a transposed one")
    x = _input(ex, x, layer, "conv2d")
    n, h, w, c = x.shape
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    kh, kw, o = layer.kh, layer.kw, layer.out_channels
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    out = _destination(ex, out, (n, ho, wo, o))
    res = out.reshape(-1, o)
    if kh == kw == 1 and ph == pw == 0 and sh == sw == 1:  # 1x1: the input is the matrix
        ex.matmul(x.reshape(-1, c), layer.mat, out=res)
    elif res.shape[0]:
        k = kh * kw * c
        total = res.shape[0]
        rows = max(1, min(total, COL_BYTES // (4 * k)))
        cols = ex.empty((rows, k))
        for p0 in range(0, total, rows):
            m = min(rows, total - p0)
            launch_1d(ex, "im2col:im2col", m * k, x, cols[:m], i32(p0), i32(m), i32(h), i32(w), i32(c),
                      i32(ho), i32(wo), i32(kh), i32(kw), i32(sh), i32(sw), i32(ph), i32(pw), i32(dh), i32(dw))
            ex.matmul(cols[:m], layer.mat, out=res[p0:p0 + m])
    return bias_act_(ex, out, layer.bias, act, slope)


def conv_transpose2d(ex, x, layer, stride=1, padding=0, output_padding=0, act=None, slope=0.1, out=None):
    """Transposed convolution (PyTorch ConvTranspose2d, groups=1, dilation=1).

    x: (N, H, W, I) float32. Returns (N, (H-1)*sh - 2*ph + kh + oph, ..., O); act, slope
    and out as in :func:`conv2d`. Per sample: taps = x @ (I, kh*kw*O) matrix, then one
    gather kernel sums each output's taps (no atomics).
    """
    if not layer.transposed:
        raise InputError("conv_transpose2d needs a layer from prepare_conv_transpose")
    x = _input(ex, x, layer, "conv_transpose2d")
    n, h, w, c = x.shape
    (sh, sw), (ph, pw), (oph, opw) = _pair(stride), _pair(padding), _pair(output_padding)
    kh, kw, o = layer.kh, layer.kw, layer.out_channels
    ho = (h - 1) * sh - 2 * ph + kh + oph
    wo = (w - 1) * sw - 2 * pw + kw + opw
    out = _destination(ex, out, (n, ho, wo, o))
    taps = ex.empty((h * w, kh * kw * o))
    # the NumPy op adds the bias before the taps for O >= 32, after them for fewer outputs
    bias_mode = 0 if layer.bias is None else (1 if o >= 32 else 2)
    for b in range(n):
        ex.matmul(x[b].reshape(-1, c), layer.mat, out=taps)
        dst = out[b]
        launch_1d(ex, "col2im:col2im", ho * wo * o, taps, out if layer.bias is None else layer.bias, dst,
                  i32(1), i32(h), i32(w), i32(o), i32(ho), i32(wo), i32(kh), i32(kw), i32(sh), i32(sw),
                  i32(ph), i32(pw), i32(bias_mode), i32(act_code(act)), f32(slope))
    return out
