"""Resizing of NHWC maps: bilinear (both corner conventions) and nearest.

Bilinear resizing is separable, so it is two small matrix products with
interpolation matrices, exactly PyTorch's ``F.interpolate`` arithmetic.
"""
from __future__ import annotations

import numpy as np

from cvflow.backend import get_xp


def interp_matrix(n_in, n_out, align_corners, scale=None):
    """(n_out, n_in) float32 matrix of bilinear weights.

    `scale` is PyTorch's input/output ratio when a scale factor was given
    (defaults to n_in / n_out, identical for integer factors).
    """
    dst = np.arange(n_out, dtype=np.float64)
    if align_corners:
        src = dst * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros(n_out)
    else:
        ratio = n_in / n_out if scale is None else scale
        src = np.maximum((dst + 0.5) * ratio - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = (src - i0).astype(np.float32)
    m = np.zeros((n_out, n_in), dtype=np.float32)
    np.add.at(m, (np.arange(n_out), i0), 1 - lam)
    np.add.at(m, (np.arange(n_out), i1), lam)
    return m


def resize_bilinear(x, out_h, out_w, align_corners):
    """Bilinear resize of x (N, H, W, C) to (N, out_h, out_w, C)."""
    xp = get_xp(x)
    n, h, w, c = x.shape
    mh = xp.asarray(interp_matrix(h, out_h, align_corners))
    mw = xp.asarray(interp_matrix(w, out_w, align_corners))
    t = xp.matmul(mh, x.reshape(n, h, w * c))              # (N, out_h, W*C)
    t = xp.matmul(mw, t.reshape(n * out_h, w, c))          # (N*out_h, out_w, C)
    return t.reshape(n, out_h, out_w, c)


def upsample_nearest(x, factor):
    """Nearest-neighbour upsampling by an integer factor, (N, H, W, C) -> (N, fH, fW, C)."""
    xp = get_xp(x)
    return xp.repeat(xp.repeat(x, factor, axis=1), factor, axis=2)
