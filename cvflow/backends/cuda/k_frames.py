"""FlowNet2's input protocol on the CUDA backend (kernels/mean_free.cu), as
cvflow/ops/frames.py's `mean_free_pair`: the first kernels of a FlowNet pass, reading the
frames as they were uploaded. The map is stored in the dtype asked for (float32, or half
storage, `k_dtype`: a half-precision pass's first activation); the frames stay as uploaded
and the per-channel means float32 (sums float64) in every mode."""
from __future__ import annotations

import numpy as np

from cvflow.backends.cuda import k_dtype
from cvflow.backends.cuda.executor import f32, i32, launch_1d
from cvflow.errors import InputError

_CHUNK = 256  # pixels per partial sum
_SUFFIX = {np.dtype(np.uint8): "u8", np.dtype(np.float32): "f32"}


def mean_free_pair(ex, img0, img1, rgb_max=255.0, dtype=np.float32):
    """Frames (H, W, 3) BGR or (H, W) gray, uint8 or float32 0..255 (host arrays are
    uploaded) -> (1, H, W, 6) of storage `dtype` (float32, float16, or uint16 bfloat16 bits):
    RGB of img0 then img1, minus the per-channel mean over both frames (float64 sums),
    divided by rgb_max, rounded once to `dtype`."""
    img0, img1 = (x if isinstance(x, ex.xp.ndarray) else ex.asarray(x, x.dtype) for x in (img0, img1))
    suffix = _SUFFIX.get(img0.dtype)
    if img0.shape != img1.shape or img0.dtype != img1.dtype or img0.ndim not in (2, 3) or suffix is None \
            or (img0.ndim == 3 and img0.shape[-1] != 3):
        raise InputError(f"img0 and img1 must be (H, W, 3) or (H, W) uint8 or float32 frames of one shape and dtype, "
                         f"got {tuple(img0.shape)} {img0.dtype} and {tuple(img1.shape)} {img1.dtype}")
    img0, img1 = (x if x.flags.c_contiguous else ex.xp.ascontiguousarray(x) for x in (img0, img1))
    h, w = img0.shape[:2]
    cin = 3 if img0.ndim == 3 else 1
    m = h * w
    chunks = max(1, -(-m // _CHUNK))
    partial = ex.empty((chunks, 6), np.float64)
    mean = ex.empty((3,))
    out = ex.empty((1, h, w, 6), dtype)
    launch_1d(ex, f"mean_free:pair_partial_{suffix}", chunks * 6, img0, img1, partial, i32(m), i32(cin), i32(_CHUNK),
              i32(chunks))
    launch_1d(ex, "mean_free:pair_mean", 3, partial, mean, i32(m), i32(chunks))
    launch_1d(ex, k_dtype.kernel(f"mean_free:pair_normalize_{suffix}", out), m * 6, img0, img1, mean, out, i32(m),
              i32(cin), f32(rgb_max))
    return out
