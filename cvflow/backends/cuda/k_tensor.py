"""Array glue of the Transformer models as kernels (kernels/copy_columns.cu, eltwise.cu,
nearest.cu, frame_norm.cu): concatenation, channel slices, crops, residual sums, scaling and the frames'
normalisation, each one launch instead of CuPy ops (which a captured graph could not
hold). Same numbers as the NumPy expressions they replace. Arrays: float32 executor
arrays; results are new C-contiguous arrays.
"""
from __future__ import annotations

import math

from cvflow.backends.cuda.executor import contiguous, f32, i32, launch_1d
from cvflow.errors import InputError


def _copy(ex, src, dst, rows, width, src_width, src_offset, dst_width, dst_offset):
    launch_1d(ex, "copy_columns:copy_columns", rows * width, src, dst, i32(rows), i32(width), i32(src_width),
              i32(src_offset), i32(dst_width), i32(dst_offset))


def concat(ex, parts, axis=-1):
    """Concatenation along `axis` of arrays equal in every other axis: one launch per
    four parts."""
    parts = [contiguous(ex, p) for p in parts]
    ndim = parts[0].ndim
    axis = axis % ndim
    shape = list(parts[0].shape)
    for p in parts:
        if p.ndim != ndim or any(p.shape[i] != shape[i] for i in range(ndim) if i != axis):
            raise InputError(f"cannot concatenate {tuple(p.shape)} with {tuple(parts[0].shape)} along axis {axis}")
    shape[axis] = sum(p.shape[axis] for p in parts)
    out = ex.empty(tuple(shape))
    rows = math.prod(shape[:axis])
    inner = math.prod(shape[axis + 1:])
    offset = 0
    for g in range(0, len(parts), 4):
        group = parts[g:g + 4]
        widths = [p.shape[axis] * inner for p in group] + [0] * (4 - len(group))
        arrays = group + [group[0]] * (4 - len(group))
        launch_1d(ex, "copy_columns:concat4", rows * sum(widths), *arrays, out, i32(rows), *(i32(w) for w in widths),
                  i32(shape[axis] * inner), i32(offset))
        offset += sum(widths)
    return out


def channels(ex, x, start, stop):
    """x[..., start:stop] of a C-contiguous x, as a new contiguous array."""
    c = x.shape[-1]
    rows = x.size // c
    out = ex.empty(x.shape[:-1] + (stop - start,))
    _copy(ex, contiguous(ex, x), out, rows, stop - start, c, start, stop - start, 0)
    return out


def crop(ex, x, pads):
    """(N, H, W, C) without `pads` (top, bottom, left, right) rows and columns, contiguous."""
    top, bottom, left, right = pads
    x = contiguous(ex, x)
    n, h, w, c = x.shape
    ho, wo = h - top - bottom, w - left - right
    out = ex.empty((n, ho, wo, c))
    for i in range(n):  # rows of one image: (ho, wo*C) from (H, W*C) at row `top`
        src = x[i, top:top + ho].reshape(ho, w * c) if top or bottom else x[i].reshape(h, w * c)
        _copy(ex, contiguous(ex, src), out[i].reshape(ho, wo * c), ho, wo * c, w * c, left * c, wo * c, 0)
    return out


def add(ex, a, b):
    """a + b, b of a's shape or of its trailing axes (broadcast over the leading ones)."""
    a, b = contiguous(ex, a), contiguous(ex, b)
    if tuple(a.shape[a.ndim - b.ndim:]) != tuple(b.shape):
        raise InputError(f"cannot add {tuple(b.shape)} to {tuple(a.shape)}")
    out = ex.empty(a.shape)
    launch_1d(ex, "eltwise:add_bcast", a.size, a, b, out, i32(a.size), i32(b.size))
    return out


def scale(ex, a, alpha):
    """a * alpha (float32)."""
    a = contiguous(ex, a)
    out = ex.empty(a.shape)
    launch_1d(ex, "eltwise:scale", a.size, a, out, i32(a.size), f32(alpha))
    return out


def clamp(ex, a, lo, hi):
    """min(max(a, lo), hi) as a new array."""
    a = contiguous(ex, a)
    out = ex.empty(a.shape)
    launch_1d(ex, "eltwise:clamp", a.size, a, out, i32(a.size), f32(lo), f32(hi))
    return out


def copy(ex, a):
    """A C-contiguous copy of a (one launch when a is contiguous)."""
    a = contiguous(ex, a)
    out = ex.empty(a.shape)
    _copy(ex, a, out.reshape(-1), 1, a.size, a.size, 0, a.size, 0)
    return out


def upsample_nearest(ex, x, factor):
    """(N, H, W, C) -> (N, factor*H, factor*W, C), each pixel repeated."""
    x = contiguous(ex, x)
    n, h, w, c = x.shape
    out = ex.empty((n, h * factor, w * factor, c))
    launch_1d(ex, "nearest:upsample_nearest", out.size, x, out, i32(n), i32(h), i32(w), i32(c), i32(factor))
    return out


def normalize_frames(ex, frames, pads, mean, std):
    """BGR (h, w, 3) float32 0..255 frames -> (len(frames), H, W, 3) RGB
    ((x / 255) - mean) / std, edge-replicated by pads (top, bottom, left, right)."""
    top, bottom, left, right = pads
    h, w = frames[0].shape[:2]
    H, W = h + top + bottom, w + left + right
    out = ex.empty((len(frames), H, W, 3))
    for i, img in enumerate(frames):
        if tuple(img.shape) != (h, w, 3):
            raise InputError(f"frames must be ({h}, {w}, 3), got {tuple(img.shape)}")
        launch_1d(ex, "frame_norm:frame_normalize", H * W * 3, contiguous(ex, img), out, i32(h), i32(w), i32(H), i32(W),
                  i32(top), i32(left), i32(i), *(f32(m) for m in mean), *(f32(s) for s in std))
    return out
