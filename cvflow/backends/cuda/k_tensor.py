"""Point-wise kernels of the Transformer models besides the backend's glue (k_glue.py):
hardtanh (kernels/clamp.cu) and nearest upsampling (kernels/nearest.cu). Same numbers as
the NumPy expressions. Arrays: C-contiguous executor arrays, float32 or half storage
(`k_dtype`); results are new, in the input's storage dtype (clamp's bounds stay float32
scalars: the result is rounded once, as NumPy's clip of the rounded input and then stored).
"""
from __future__ import annotations

from cvflow.backends.cuda.executor import contiguous, f32, i32, launch_1d
from cvflow.backends.cuda.k_dtype import kernel, storage


def clamp(ex, a, lo, hi):
    """min(max(a, lo), hi) as a new array."""
    a = contiguous(ex, a, storage(a))
    out = ex.empty(a.shape, a.dtype)
    launch_1d(ex, kernel("clamp:clamp", a), a.size, a, out, i32(a.size), f32(lo), f32(hi))
    return out


def upsample_nearest(ex, x, factor):
    """(N, H, W, C) -> (N, factor*H, factor*W, C), each pixel repeated."""
    x = contiguous(ex, x, storage(x))
    n, h, w, c = x.shape
    out = ex.empty((n, h * factor, w * factor, c), x.dtype)
    launch_1d(ex, kernel("nearest:upsample_nearest", x), out.size, x, out, i32(n), i32(h), i32(w), i32(c),
              i32(factor))
    return out
