"""FlowNet2's input protocol on the CUDA backend (kernels/mean_free.cu), as
cvflow/ops/frames.py's `mean_free_pair`: the first kernels of a FlowNet pass."""
from __future__ import annotations

import numpy as np

from cvflow.backends.cuda.executor import contiguous, f32, i32, launch_1d
from cvflow.errors import InputError

_CHUNK = 256  # pixels per partial sum


def mean_free_pair(ex, img0, img1, rgb_max=255.0):
    """BGR frames (H, W, 3) float32 -> (1, H, W, 6): RGB of img0 then img1, minus the
    per-channel mean over both frames (float64 sums), divided by rgb_max."""
    img0, img1 = contiguous(ex, img0), contiguous(ex, img1)
    if img0.shape != img1.shape or img0.ndim != 3 or img0.shape[-1] != 3:
        raise InputError(f"img0 and img1 must be (H, W, 3) of one shape, got {tuple(img0.shape)} and "
                         f"{tuple(img1.shape)}")
    h, w, _ = img0.shape
    m = h * w
    chunks = max(1, -(-m // _CHUNK))
    partial = ex.empty((chunks, 6), np.float64)
    mean = ex.empty((3,))
    out = ex.empty((1, h, w, 6))
    launch_1d(ex, "mean_free:pair_partial", chunks * 6, img0, img1, partial, i32(m), i32(_CHUNK), i32(chunks))
    launch_1d(ex, "mean_free:pair_mean", 3, partial, mean, i32(m), i32(chunks))
    launch_1d(ex, "mean_free:pair_normalize", m * 6, img0, img1, mean, out, i32(m), f32(rgb_max))
    return out
