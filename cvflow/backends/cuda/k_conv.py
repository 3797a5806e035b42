"""Convolutions on the CUDA backend: im2col kernel + matrix product (cuBLAS) + fused
bias/activation; transposed convolutions by one product + a col2im gather kernel.

Same contract as cvflow/ops/conv.py and cvflow/ops/conv_transpose.py (groups=1): NHWC
float32 activations, weights in PyTorch layout, zero padding. Weights are prepared once
per layer (:func:`prepare_conv`, :func:`prepare_conv_transpose`): the prepared layer
holds the device weight matrix, never written into the user's weight dict.

Half storage (`k_dtype`, precision "fp16"/"bf16"): activations of float16 or bfloat16 bits
run the typed kernels; the output, the columns and the taps take the input's storage
dtype, and the layer's matrix and bias are used in it too (`k_dtype.like`: free when the
layer was prepared in it, else converted per call). Products accumulate in float32
(the executor's matmul) and bias/activation epilogues compute in float32, each rounded
once on store.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cvflow.backends.cuda import k_glue
from cvflow.backends.cuda.executor import contiguous, f32, i32, launch_1d
from cvflow.backends.cuda.k_act import act_code, bias_act_
from cvflow.backends.cuda.k_dtype import kernel, like, storage
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


def _destination(ex, out, shape, dtype):
    if out is None:
        return ex.empty(shape, dtype)
    if tuple(out.shape) != shape or out.dtype != dtype or not out.flags.c_contiguous:
        raise InputError(f"`out` must be a C-contiguous {np.dtype(dtype)} array of shape {shape}, got "
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
    """x made C-contiguous (float32, or its half storage), after checking its channels (last
    axis) match the layer's."""
    x = contiguous(ex, x, storage(x))
    if x.shape[-1] != layer.in_channels:
        raise InputError(f"{op}: input has {x.shape[-1]} channels, the layer takes {layer.in_channels}")
    return x


def conv2d(ex, x, layer, stride=1, padding=0, dilation=1, act=None, slope=0.1, out=None):
    """Convolution (cross-correlation, as PyTorch), zero padding, then bias and act.

    x: (N, H, W, I) float32 or half storage (made contiguous). act: None, "relu" or "leaky"
    (slope). out: optional C-contiguous (N, Ho, Wo, O) destination of x's dtype.
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
    out = _destination(ex, out, (n, ho, wo, o), x.dtype)
    res = out.reshape(-1, o)
    mat = like(ex, layer.mat, x)
    if kh == kw == 1 and ph == pw == 0:  # 1x1: the (strided) input is the matrix
        xs = x if sh == sw == 1 else k_glue.copy(ex, x[:, ::sh, ::sw])
        ex.matmul(xs.reshape(-1, c), mat, out=res)
    elif res.shape[0]:
        k = kh * kw * c
        total = res.shape[0]
        rows = max(1, min(total, COL_BYTES // (x.dtype.itemsize * k)))
        cols = ex.empty((rows, k), x.dtype)
        for p0 in range(0, total, rows):
            m = min(rows, total - p0)
            launch_1d(ex, kernel("im2col:im2col", x), m * k, x, cols[:m], i32(p0), i32(m), i32(h), i32(w), i32(c),
                      i32(ho), i32(wo), i32(kh), i32(kw), i32(sh), i32(sw), i32(ph), i32(pw), i32(dh), i32(dw))
            ex.matmul(cols[:m], mat, out=res[p0:p0 + m])
    return bias_act_(ex, out, layer.bias, act, slope)


def conv2d_(ex, x, layer, padding=0, act=None, slope=0.1):
    """:func:`conv2d` (stride 1, 'same' size, as many outputs as inputs) written over x:
    chunk k's output is held in one chunk buffer until chunk k+1's columns are gathered
    (they read up to `lag` pixels back into chunk k), then copied into x. The full-size
    output buffer is never made (RAFT at 4K: 506 MiB per residual block). Same numbers as
    conv2d; where the shapes do not allow it, conv2d. Returns the output."""
    x = _input(ex, x, layer, "conv2d_")
    n, h, w, c = x.shape
    (ph, pw) = _pair(padding)
    kh, kw, o = layer.kh, layer.kw, layer.out_channels
    k = kh * kw * c
    total = n * h * w
    rows = max(1, min(total, COL_BYTES // (x.dtype.itemsize * k)))
    lag = (kh // 2) * w + kw // 2 + 1
    if o != c or 2 * ph != kh - 1 or 2 * pw != kw - 1 or kh == kw == 1 or rows >= total or rows <= lag:
        return conv2d(ex, x, layer, padding=padding, act=act, slope=slope)
    flat = x.reshape(-1, c)
    cols, buf = ex.empty((rows, k), x.dtype), ex.empty((rows, o), x.dtype)
    mat = like(ex, layer.mat, x)
    held = None
    for p0 in range(0, total, rows):
        m = min(rows, total - p0)
        launch_1d(ex, kernel("im2col:im2col", x), m * k, x, cols[:m], i32(p0), i32(m), i32(h), i32(w), i32(c),
                  i32(h), i32(w), i32(kh), i32(kw), i32(1), i32(1), i32(ph), i32(pw), i32(1), i32(1))
        if held is not None:
            k_glue.copy(ex, buf[:held[1]], flat[held[0]:held[0] + held[1]])
        ex.matmul(cols[:m], mat, out=buf[:m])
        held = (p0, m)
    k_glue.copy(ex, buf[:held[1]], flat[held[0]:held[0] + held[1]])
    return bias_act_(ex, x, layer.bias, act, slope)


def conv_transpose2d(ex, x, layer, stride=1, padding=0, output_padding=0, act=None, slope=0.1, out=None):
    """Transposed convolution (PyTorch ConvTranspose2d, groups=1, dilation=1).

    x: (N, H, W, I) float32 or half storage. Returns (N, (H-1)*sh - 2*ph + kh + oph, ..., O); act, slope
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
    out = _destination(ex, out, (n, ho, wo, o), x.dtype)
    taps = ex.empty((h * w, kh * kw * o), x.dtype)
    mat = like(ex, layer.mat, x)
    bias = out if layer.bias is None else like(ex, layer.bias, x)
    # the NumPy op adds the bias before the taps for O >= 32, after them for fewer outputs
    bias_mode = 0 if layer.bias is None else (1 if o >= 32 else 2)
    for b in range(n):
        ex.matmul(x[b].reshape(-1, c), mat, out=taps)
        dst = out[b]
        launch_1d(ex, kernel("col2im:col2im", x), ho * wo * o, taps, bias, dst,
                  i32(1), i32(h), i32(w), i32(o), i32(ho), i32(wo), i32(kh), i32(kw), i32(sh), i32(sw),
                  i32(ph), i32(pw), i32(bias_mode), i32(act_code(act)), f32(slope))
    return out


# -- convolutions of pending and concatenated inputs ---------------------------------------
@dataclass
class Pending:
    """act(raw + bias) per channel, not yet computed: a convolution's output whose epilogue
    (bias, ReLU) runs in its consumer's im2col gather instead of a pass of its own. raw:
    (N, H, W, C) float32 or half storage (any view with unit channel stride); bias (C,)
    (used in raw's storage dtype) or None; act None or
    "relu". Not an array: whatever does not know it fails instead of reading raw values."""

    raw: object
    bias: object
    act: str | None

    @property
    def shape(self):
        return self.raw.shape


_MAX_SOURCES = 3


def _source(ex, part):
    """A part (array view or Pending) as im2col_parts' (flat, bias, offset, pixel stride,
    channels, flags)."""
    raw, bias, act = (part.raw, part.bias, part.act) if isinstance(part, Pending) else (part, None, None)
    flat, off, st = k_glue._flat(ex, raw)
    n, h, w, c = raw.shape
    if st[3] != 1 or (h > 1 and st[1] != w * st[2]) or (n > 1 and st[0] != h * st[1]):
        raise InputError(f"convolution input view of shape {tuple(raw.shape)} with strides {st}: pixels must "
                         "be evenly spaced")
    flags = (bias is not None) | (act_code(act) << 1)
    if act not in (None, "relu"):
        raise InputError(f"a pending activation is None or 'relu', got {act!r}")
    return flat, flat if bias is None else like(ex, contiguous(ex, bias, storage(bias)), raw), off, st[2], c, flags


def conv2d_parts(ex, parts, layer, stride=1, padding=0, dilation=1):
    """Convolution of the channel concatenation of `parts` (arrays or Pending, each
    (N, H, W, C_i)) without bias or activation: one im2col gather over the parts (their
    pending epilogues applied as they are read) and one product per chunk. Returns the raw
    (N, Ho, Wo, O) output; the caller adds the layer's bias and activation (or defers them)."""
    if not 1 <= len(parts) <= _MAX_SOURCES:
        raise InputError(f"a convolution takes 1 to {_MAX_SOURCES} parts, got {len(parts)}")
    n, h, w = parts[0].shape[:3]
    if any(tuple(p.shape[:3]) != (n, h, w) for p in parts):
        raise InputError(f"concatenated parts differ in (N, H, W): {[tuple(p.shape) for p in parts]}")
    c = sum(p.shape[3] for p in parts)
    dtypes = [(p.raw if isinstance(p, Pending) else p).dtype for p in parts]
    dtype = dtypes[0]
    if any(d != dtype for d in dtypes):
        raise InputError(f"concatenated parts differ in storage dtype: {[str(d) for d in dtypes]}")
    if c != layer.in_channels:
        raise InputError(f"conv2d: input has {c} channels, the layer takes {layer.in_channels}")
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    kh, kw, o = layer.kh, layer.kw, layer.out_channels
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    out = ex.empty((n, ho, wo, o), dtype)
    res = out.reshape(-1, o)
    srcs = [_source(ex, p) for p in parts]
    while len(srcs) < _MAX_SOURCES:  # unused sources: no channels
        srcs.append((srcs[0][0], srcs[0][0], 0, 0, 0, 0))
    args = [a for f, b, off, st, ch, fl in srcs for a in (f, b, i32(off), i32(st), i32(ch), i32(fl))]
    total = res.shape[0]
    k = kh * kw * c
    rows = max(1, min(total, COL_BYTES // (np.dtype(dtype).itemsize * k)))
    cols = ex.empty((rows, k), dtype)
    mat = like(ex, layer.mat, cols)
    for p0 in range(0, total, rows):
        m = min(rows, total - p0)
        launch_1d(ex, kernel("im2col:im2col_parts", cols), m * k, cols[:m], i32(p0), i32(m), i32(h), i32(w),
                  i32(ho), i32(wo), i32(kh), i32(kw), i32(sh), i32(sw), i32(ph), i32(pw), i32(dh), i32(dw), *args)
        ex.matmul(cols[:m], mat, out=res[p0:p0 + m])
    return out
