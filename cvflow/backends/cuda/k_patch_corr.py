"""FlowNet's patch correlation on the CUDA backend (kernels/patch_corr.cu), as
cvflow/ops/corr.py's `patch_correlation` (kernel 1, zero padding). Float32 or half
storage (`k_dtype`): the output takes f1's storage dtype (f2 is converted to it); the
products and their channel sum are float32 in every mode."""
from __future__ import annotations

from cvflow.backends.cuda import k_dtype
from cvflow.backends.cuda.executor import contiguous, i32, launch_1d
from cvflow.errors import InputError


def patch_correlation(ex, f1, f2, max_displacement=20, stride=2):
    """f1, f2: (N, H, W, C) float32 or half storage. For (dx, dy) = (stride*i, stride*j),
    i, j in -r..r, r = max_displacement // stride, channel (j + r)*(2r+1) + (i + r) holds
    sum_c f1[y, x, c] * f2[y + dy, x + dx, c] / C (zero outside f2).
    Returns (N, H, W, (2r+1)^2) in f1's storage dtype."""
    f1 = contiguous(ex, f1, k_dtype.storage(f1))
    f2 = k_dtype.like(ex, contiguous(ex, f2, k_dtype.storage(f2)), f1)
    if f1.shape != f2.shape or f1.ndim != 4:
        raise InputError(f"f1 and f2 must be (N, H, W, C) of one shape, got {tuple(f1.shape)} and {tuple(f2.shape)}")
    n, h, w, c = f1.shape
    r = max_displacement // stride
    d = 2 * r + 1
    out = ex.empty((n, h, w, d * d), f1.dtype)
    launch_1d(ex, k_dtype.kernel("patch_corr:patch_correlation", f1), out.size, f1, f2, out, i32(n), i32(h),
              i32(w), i32(c), i32(r), i32(stride))
    return out
