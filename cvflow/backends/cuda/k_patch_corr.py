"""FlowNet's patch correlation on the CUDA backend (kernels/patch_corr.cu), as
cvflow/ops/corr.py's `patch_correlation` (kernel 1, zero padding)."""
from __future__ import annotations


def patch_correlation(ex, f1, f2, max_displacement=20, stride=2):
    """f1, f2: (N, H, W, C) float32. For (dx, dy) = (stride*i, stride*j), i, j in -r..r,
    r = max_displacement // stride, channel (j + r)*(2r+1) + (i + r) holds
    sum_c f1[y, x, c] * f2[y + dy, x + dx, c] / C (zero outside f2).
    Returns (N, H, W, (2r+1)^2) float32."""
    raise NotImplementedError
