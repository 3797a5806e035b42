"""Depthwise 2-D convolution (groups == channels), NHWC: ConvNeXt's 7x7 spatial mixing.

Weights keep PyTorch's layout (C, 1, kh, kw); the result is the cross-correlation of
each channel with its own kernel, zero padding, stride 1, plus the bias. The generic
path (any array module) accumulates the kh*kw shifted, scaled copies of the padded
input; NumPy's runs OpenCV's `filter2D` per channel plane (SIMD, zero border), the
planes split among cvflow's threads.
"""
from __future__ import annotations

import numpy as np

from cvflow.arrays import get_xp
from cvflow.errors import InputError
from cvflow.ops.parallel import map_spans

try:  # a runtime dependency; bench/gpu_check.sh may run where only NumPy and CuPy are
    import cv2
except ImportError:
    cv2 = None


def check_depthwise(x, p, padding):
    """Validate x (N, H, W, C) float32 against weight (C, 1, kh, kw) and `padding`."""
    w = p["weight"]
    if x.ndim != 4 or w.ndim != 4 or w.shape[0] != x.shape[-1] or w.shape[1] != 1:
        raise InputError(f"depthwise convolution needs x (N, H, W, C) and weight (C, 1, kh, kw), got x "
                         f"shape {tuple(x.shape)} {x.dtype} and weight shape {tuple(w.shape)}")
    ph, pw = (padding, padding) if np.isscalar(padding) else padding
    kh, kw = w.shape[2:]
    if not (0 <= ph and 0 <= pw and x.shape[1] + 2 * ph >= kh and x.shape[2] + 2 * pw >= kw):
        raise InputError(f"depthwise convolution: padding {padding} leaves no output for x shape "
                         f"{tuple(x.shape)} and a {kh}x{kw} kernel")
    return int(ph), int(pw)


def depthwise_conv2d(x, p, padding=0):
    """x (N, H, W, C) float32, p = {"weight": (C, 1, kh, kw), "bias": (C,) optional},
    zero `padding` (int or (ph, pw)), stride 1. Returns (N, H + 2ph - kh + 1, W + 2pw - kw + 1, C)."""
    ph, pw = check_depthwise(x, p, padding)
    xp = get_xp(x)
    kh, kw = p["weight"].shape[2:]
    if xp is np and cv2 is not None and x.dtype == np.float32 and 2 * ph == kh - 1 and 2 * pw == kw - 1:
        out = _filter2d(x, p["weight"])
    else:
        out = _shifted(xp, x, p["weight"], ph, pw)
    bias = p.get("bias")
    if bias is not None:
        out += bias
    return out


def _shifted(xp, x, weight, ph, pw):
    """Sum over taps of the padded input's shifted window times the tap's per-channel weight."""
    n, h, w, c = x.shape
    kh, kw = weight.shape[2:]
    ho, wo = h + 2 * ph - kh + 1, w + 2 * pw - kw + 1
    padded = xp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    taps = xp.ascontiguousarray(weight[:, 0].transpose(1, 2, 0))  # (kh, kw, C)
    out = xp.zeros((n, ho, wo, c), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            out += padded[:, i:i + ho, j:j + wo] * taps[i, j]
    return out


def _filter2d(x, weight):
    """'Same' depthwise correlation by cv2.filter2D per (sample, channel) plane."""
    n, h, w, c = x.shape
    planes = np.ascontiguousarray(x.transpose(0, 3, 1, 2)).reshape(n * c, h, w)
    kernels = np.ascontiguousarray(weight[:, 0], dtype=np.float32)
    out = np.empty_like(planes)

    def span(a, b):
        for k in range(a, b):
            cv2.filter2D(planes[k], cv2.CV_32F, kernels[k % c], dst=out[k], borderType=cv2.BORDER_CONSTANT)

    map_spans(span, n * c, per_item=h * w)
    return np.ascontiguousarray(out.reshape(n, c, h, w).transpose(0, 2, 3, 1))
