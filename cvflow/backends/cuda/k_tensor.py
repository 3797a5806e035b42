"""Point-wise kernels of the Transformer models besides the backend's glue (k_glue.py):
hardtanh (kernels/clamp.cu) and nearest upsampling (kernels/nearest.cu). Same numbers as
the NumPy expressions. Arrays: C-contiguous float32 executor arrays; results are new.
"""
from __future__ import annotations

from cvflow.backends.cuda.executor import contiguous, f32, i32, launch_1d


def clamp(ex, a, lo, hi):
    """min(max(a, lo), hi) as a new array."""
    a = contiguous(ex, a)
    out = ex.empty(a.shape)
    launch_1d(ex, "clamp:clamp", a.size, a, out, i32(a.size), f32(lo), f32(hi))
    return out


def upsample_nearest(ex, x, factor):
    """(N, H, W, C) -> (N, factor*H, factor*W, C), each pixel repeated."""
    x = contiguous(ex, x)
    n, h, w, c = x.shape
    out = ex.empty((n, h * factor, w * factor, c))
    launch_1d(ex, "nearest:upsample_nearest", out.size, x, out, i32(n), i32(h), i32(w), i32(c), i32(factor))
    return out
