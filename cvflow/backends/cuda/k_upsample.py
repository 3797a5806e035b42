"""Upsampling on the CUDA backend (kernels/upsample.cu): RAFT/GMFlow convex upsampling
and bilinear resizing, same numbers as cvflow/ops/upsample.py.

Storage (`k_dtype`): convex upsampling takes its mask in float32 or half storage and keeps
the flow and its output float32 (a half flow is converted: flows are never stored in
half); bilinear resizing reads and writes x's storage dtype (tables float32)."""
from __future__ import annotations

import functools

import numpy as np

from cvflow.backends.cuda.executor import contiguous, i32, launch_1d
from cvflow.backends.cuda.k_dtype import kernel, storage
from cvflow.backends.cuda.k_glue import floats
from cvflow.errors import InputError
from cvflow.ops.upsample import interp_matrix


def convex_upsample(ex, flow, mask, factor=8):
    """flow (N, H, W, C) coarse map, mask (N, H, W, 9*factor^2) logits (channel
    k*factor^2 + i*factor + j: neighbour k of the 3x3, row-major; sub-pixel (i, j)).
    Returns (N, factor*H, factor*W, C): per fine pixel, the softmax-weighted mix of the
    3x3 coarse neighbours (zeros outside) times `factor`, float32."""
    flow, mask = floats(ex, flow), contiguous(ex, mask, storage(mask))
    n, h, w, c = flow.shape
    if tuple(mask.shape) != (n, h, w, 9 * factor * factor):
        raise InputError(f"mask must be {(n, h, w, 9 * factor * factor)} for flow {tuple(flow.shape)} "
                         f"and factor {factor}, got {tuple(mask.shape)}")
    out = ex.empty((n, factor * h, factor * w, c))
    launch_1d(ex, kernel("upsample:convex_upsample", mask), out.size, flow, mask, out, i32(n), i32(h), i32(w), i32(c),
              i32(factor))
    return out


def _table(ex, n_in, n_out, align_corners):
    """(n_out, 2) source indices and weights on the executor (see `_host_table`)."""
    idx, wgt = _host_table(n_in, n_out, align_corners)
    return ex.asarray(idx, np.int32), ex.asarray(wgt)


@functools.lru_cache(maxsize=64)
def _host_table(n_in, n_out, align_corners):
    """(n_out, 2) source indices and weights: the non-zeros of the NumPy op's
    interpolation matrix, (i0, i1) with i1's weight 0 where both are one index."""
    m = interp_matrix(n_in, n_out, align_corners)
    idx = np.zeros((n_out, 2), np.int32)
    wgt = np.zeros((n_out, 2), np.float32)
    for r, row in enumerate(m):
        nz = np.flatnonzero(row)[:2] if row.any() else np.zeros(1, np.int64)
        idx[r, :len(nz)] = nz
        idx[r, len(nz):] = nz[0]
        wgt[r, :len(nz)] = row[nz]
    idx.flags.writeable = wgt.flags.writeable = False  # cached: shared by every call
    return idx, wgt


def resize_bilinear(ex, x, out_h, out_w, align_corners, table=None):
    """Bilinear resize of x (N, H, W, C) to (N, out_h, out_w, C), PyTorch's F.interpolate
    arithmetic (both corner conventions). table(n_in, n_out, align_corners) -> device
    (indices, weights): a caller's memo of `_table` (the backend's constants, uploaded once
    per shape); default: uploaded per call."""
    x = contiguous(ex, x, storage(x))
    n, h, w, c = x.shape
    out = ex.empty((n, out_h, out_w, c), x.dtype)
    table = table or (lambda a, b, ac: _table(ex, a, b, ac))
    yi, yw = table(h, out_h, align_corners)
    xi, xw = table(w, out_w, align_corners)
    launch_1d(ex, kernel("upsample:resize_bilinear", x), out.size, x, out, yi, yw, xi, xw, i32(n), i32(h), i32(w),
              i32(c), i32(out_h), i32(out_w))
    return out

