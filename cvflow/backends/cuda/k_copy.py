"""Copies and scalings on the CUDA backend (kernels/concat.cu, kernels/scale.cu): the
array glue of the models (concatenations, flow rescaling) as executor kernels, so a pass
has no array op outside the executor and can be captured into a graph.

Channel slices (``x[..., a:b]`` of a C-contiguous map) are read where they lie, without a
copy: :func:`rows_view` describes them to the kernels as rows of a wider map.
"""
from __future__ import annotations

import numpy as np

from cvflow.backends.cuda.executor import contiguous, f32, i32, launch_1d
from cvflow.errors import InputError

_PARTS = 4  # parts per concat4 launch
_MAX = 2**31 - 1


def _address(x):
    ptr = getattr(getattr(x, "data", None), "ptr", None)  # CuPy: the view's device pointer
    return ptr if ptr is not None else x.__array_interface__["data"][0]


def rows_view(ex, x):
    """x (..., C) as (base, stride, offset): a C-contiguous float32 array of the executor
    in which element c of x's row r (rows: x's leading indices in C order) is
    base.ravel()[offset + r*stride + c]. x itself (stride C, offset 0) when it is
    contiguous; its base when x is a channel slice of a contiguous map covering all its
    rows; otherwise a contiguous copy (an array op). Host arrays are copied to the device."""
    if not isinstance(x, ex.xp.ndarray) or x.dtype != np.float32:
        x = contiguous(ex, x)
    if x.flags.c_contiguous:
        return x, (x.shape[-1] if x.ndim else 1), 0
    base, item, c = x.base, x.itemsize, x.shape[-1]
    ok = base is not None and x.ndim >= 2 and x.strides[-1] == item and base.flags.c_contiguous \
        and base.dtype == x.dtype
    if ok:
        stride = x.strides[-2] // item
        for k in range(x.ndim - 2):  # leading axes: rows in C order, `stride` apart
            inner = int(np.prod(x.shape[k + 1:-1])) * stride * item
            ok &= x.shape[k] == 1 or x.strides[k] == inner
        rows = x.size // max(c, 1)
        off = (_address(x) - _address(base)) // item
        ok &= x.strides[-2] % item == 0 and base.size == rows * stride and 0 <= off <= stride - c
    if not ok:
        x = contiguous(ex, x)
        return x, x.shape[-1], 0
    return (base if isinstance(base, ex.xp.ndarray) else base.view(ex.xp.ndarray)), stride, off


def concat(ex, parts, axis=-1):
    """xp.concatenate(parts, axis) by copy kernels, for float32 maps joined on their last
    axis, or on axis 0; parts may be channel slices (read in place, see `rows_view`).
    Returns None where that does not apply (other axes or dtypes): the caller falls back."""
    parts = list(parts)
    if not parts or any(getattr(p, "dtype", None) != np.float32 for p in parts):
        return None
    nd = parts[0].ndim
    if nd == 0 or any(p.ndim != nd for p in parts):
        return None
    axis = axis + nd if axis < 0 else axis
    if axis == nd - 1:
        lead = parts[0].shape[:-1]
        if any(p.shape[:-1] != lead for p in parts):
            raise InputError(f"concat: parts differ outside the last axis: {[tuple(p.shape) for p in parts]}")
        width = sum(p.shape[-1] for p in parts)
        out = ex.empty(lead + (width,))
        rows = int(np.prod(lead))
        offsets = np.cumsum([0] + [p.shape[-1] for p in parts])[:-1]
        stride = width
    elif axis == 0:
        tail = parts[0].shape[1:]
        if any(p.shape[1:] != tail for p in parts):
            raise InputError(f"concat: parts differ outside axis 0: {[tuple(p.shape) for p in parts]}")
        out = ex.empty((sum(p.shape[0] for p in parts),) + tail)
        stride = tail[-1] if tail else 1
        offsets = np.cumsum([0] + [p.size for p in parts])[:-1]
    else:
        return None
    if out.size >= _MAX:
        return None
    jobs = []
    for p, dst in zip(parts, offsets):
        if p.size == 0:
            continue
        base, s, o = rows_view(ex, p)
        cols = p.shape[-1] if p.ndim else 1
        jobs.append((base, i32(p.size // cols), i32(cols), i32(s), i32(o), i32(dst)))
    for k in range(0, len(jobs), _PARTS):
        group = jobs[k:k + _PARTS]
        total = sum(int(j[1]) * int(j[2]) for j in group)
        group += [(out, i32(0), i32(1), i32(1), i32(0), i32(0))] * (_PARTS - len(group))
        launch_1d(ex, "concat:concat4", total, out, i32(stride), *(a for j in group for a in j))
    return out


def scale(ex, x, s, divide=False):
    """x * s (or x / s) as a new array. s: a number, or (sx, sy) for a 2-channel map (a
    flow: dx scaled by sx, dy by sy). x: (..., C) float32 (made contiguous)."""
    x = contiguous(ex, x)
    if np.ndim(s):
        sx, sy = (float(v) for v in s)
        if x.shape[-1] != 2:
            raise InputError(f"scale: per-axis factors need a (..., 2) map, got {tuple(x.shape)}")
    else:
        sx = sy = float(s)
    out = ex.empty(x.shape)
    launch_1d(ex, "scale:scale", x.size, x, out, i32(x.size), i32(x.shape[-1] if x.ndim else 1), f32(sx), f32(sy),
              i32(divide))
    return out
