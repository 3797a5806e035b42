"""Array glue as kernels (kernels/strided.cu, kernels/frames.cu): views made contiguous,
channel slices with an activation, concatenation, crops, element-wise sums and scalings,
and the frame pair's upload format. With these a pass is executor calls only, which is
what a CUDA graph can hold (an array op of CuPy's would be a kernel outside the graph;
the emulator refuses it during a capture). Same numbers as the NumPy expressions they
replace (separate float32 operations).

Storage: float32, or half (`k_dtype`: float16, uint16 bfloat16 bits); every kernel here
works in its first array's storage type (outputs too) and converts the others' to it
(`k_dtype.like`: a layer scale or a per-channel vector of weights). Arithmetic stays
float32, rounded once on store; a plain copy moves the stored bits. The frame pair is
float32 by default; `frames(dtype=)` writes it in half storage directly.
"""
from __future__ import annotations

import numpy as np

from cvflow.backends.cuda.executor import contiguous, f32, i32, launch_1d
from cvflow.backends.cuda.k_dtype import kernel, like, suffix, to_float
from cvflow.errors import DeviceError, InputError

_STORAGE = (np.dtype(np.float32), np.dtype(np.float16), np.dtype(np.uint16))

_ACT = {None: 0, "relu": 1, "tanh": 3}
_OPS = {"add": 0, "sub": 1, "mul": 2}


def _ptr(a):
    data = a.data
    return data.ptr if hasattr(data, "ptr") else a.ctypes.data


def _flat(ex, x):
    """(the flat C-contiguous buffer holding x's memory, x's offset in it, x's strides), in
    elements: a kernel argument for any view of a float32 (or half storage) array."""
    owner = x
    while isinstance(getattr(owner, "base", None), (np.ndarray, ex.xp.ndarray)):
        owner = owner.base
    if not owner.flags.c_contiguous or owner.dtype != x.dtype or x.dtype not in _STORAGE:
        raise DeviceError(f"strided copy: a float32 (or half storage) view of a C-contiguous buffer is needed, "
                          f"got {x.dtype}")
    if not isinstance(owner, ex.xp.ndarray):
        owner = owner.view(ex.xp.ndarray)
    size = x.dtype.itemsize
    return owner.reshape(-1), (_ptr(x) - _ptr(owner)) // size, [s // size for s in x.strides]


def _dims(shape, strides):
    """Shape and strides as 4 dims (leading 1s); more dims must merge."""
    shape, strides = list(shape), list(strides)
    while len(shape) > 4:  # merge the leading dims when their strides allow it
        if strides[0] != strides[1] * shape[1]:
            raise DeviceError(f"strided copy: {len(shape)}-D views that do not merge to 4-D: {shape}")
        shape[0:2], strides[0:2] = [shape[0] * shape[1]], [strides[1]]
    pad = 4 - len(shape)
    return [1] * pad + shape, [0] * pad + strides


def copy(ex, x, out=None, act=None):
    """act(x) (None, "relu" or "tanh") written into `out` (any view of x's shape and storage
    dtype; default a new C-contiguous array). Returns out."""
    if out is None:
        out = ex.empty(x.shape, x.dtype)
    if tuple(out.shape) != tuple(x.shape) or out.dtype != x.dtype:
        raise InputError(f"strided copy: shapes or dtypes differ: {tuple(x.shape)} {x.dtype} into "
                         f"{tuple(out.shape)} {out.dtype}")
    if x.size == 0:
        return out
    src, soff, ss = _flat(ex, x)
    dst, doff, ds = _flat(ex, out)
    n, ss = _dims(x.shape, ss)
    _, ds = _dims(x.shape, ds)
    launch_1d(ex, kernel("strided:strided_copy", x), x.size, src, dst, i32(soff), i32(doff), *map(i32, n),
              *map(i32, ss), *map(i32, ds), i32(_ACT[act]))
    return out


def rows(ex, x):
    """x (..., C) as (buffer, stride, offset) for kernels that read pixel rows: element c of
    x's row r (rows: x's leading indices in C order) is buffer[offset + r*stride + c]. For
    a C-contiguous x or a channel slice of one (``x[..., a:b]``: read in place); any other
    view (or a host array) is copied first. Half storage stays half; other dtypes become float32."""
    if not isinstance(x, ex.xp.ndarray) or x.dtype not in _STORAGE:
        x = ex.xp.ascontiguousarray(ex.xp.asarray(x), dtype=np.float32)
    if x.flags.c_contiguous:
        return x, (x.shape[-1] if x.ndim else 1), 0
    flat, off, st = _flat(ex, x)
    ok = x.ndim >= 2 and st[-1] == 1
    for k in range(x.ndim - 2):  # leading axes: rows in C order, st[-2] apart
        ok = ok and (x.shape[k] == 1 or st[k] == st[k + 1] * x.shape[k + 1])
    if not ok:
        x = copy(ex, x)
        return x, x.shape[-1], 0
    return flat, st[-2], off


def concat(ex, parts, axis=-1):
    """numpy.concatenate(parts, axis): one copy kernel per part into its slice."""
    ndim = parts[0].ndim
    axis = axis % ndim
    shape = list(parts[0].shape)
    shape[axis] = sum(p.shape[axis] for p in parts)
    out = ex.empty(tuple(shape), parts[0].dtype)
    at = 0
    for p in parts:
        if p.ndim != ndim or any(p.shape[k] != shape[k] for k in range(ndim) if k != axis):
            raise InputError(f"concat: part of shape {tuple(p.shape)} does not fit {tuple(shape)} on axis {axis}")
        sl = (slice(None),) * axis + (slice(at, at + p.shape[axis]),)
        copy(ex, p, out[sl])
        at += p.shape[axis]
    return out


def _contiguous(ex, x):
    """x as a C-contiguous device array of its storage dtype: a host array uploaded (as
    float32), a view copied by the kernel, another dtype converted to float32."""
    if not isinstance(x, ex.xp.ndarray):
        return ex.asarray(x)
    if x.dtype not in _STORAGE:
        return ex.asarray(x)
    return x if x.flags.c_contiguous else copy(ex, x)


def floats(ex, x):
    """x as a C-contiguous float32 device array: what kernels read coordinates, flows and
    tables as in every precision (half storage converted exactly; other dtypes cast)."""
    if isinstance(x, ex.xp.ndarray) and x.dtype in _STORAGE[1:]:
        x = to_float(ex, x)
    return contiguous(ex, x)


def binary(ex, a, b, op):
    """a + b, a - b or a * b (op "add", "sub", "mul") as a new array; b of a's shape or of
    its trailing axes (a vector of the last axis, a map broadcast over the batch); in a's
    storage dtype."""
    a = _contiguous(ex, a)
    b = like(ex, _contiguous(ex, b), a)
    trailing = b.ndim <= a.ndim and tuple(b.shape) == tuple(a.shape[a.ndim - b.ndim:])
    if b.size != a.size and not trailing:
        raise InputError(f"{op}: shapes {tuple(a.shape)} and {tuple(b.shape)} do not fit")
    out = ex.empty(a.shape, a.dtype)
    launch_1d(ex, kernel("strided:binary", a), a.size, a, b, out, i32(a.size), i32(b.size), i32(_OPS[op]))
    return out


def scale(ex, x, s, divide=False):
    """x * float32(s) (x / float32(s) when divide) as a new array; s a number, or (sx, sy)
    for a 2-channel map (a flow: dx scaled by sx, dy by sy)."""
    x = _contiguous(ex, x)
    if np.ndim(s):
        sx, sy = (float(v) for v in s)
        if x.shape[-1] != 2:
            raise InputError(f"scale: per-axis factors need a (..., 2) map, got {tuple(x.shape)}")
    else:
        sx = sy = float(s)
    out = ex.empty(x.shape, x.dtype)
    launch_1d(ex, kernel("strided:scale", x), x.size, x, out, i32(x.size), i32(x.shape[-1] if x.ndim else 1),
              f32(sx), f32(sy), i32(divide))
    return out


def add_scaled(ex, x, g, y):
    """x + g * y (g: a vector of the last axis) as a new array."""
    x = _contiguous(ex, x)
    y, g = (like(ex, _contiguous(ex, a), x) for a in (y, g))
    if x.shape != y.shape or g.size != x.shape[-1]:
        raise InputError(f"add_scaled: shapes {tuple(x.shape)}, {tuple(g.shape)}, {tuple(y.shape)} do not fit")
    out = ex.empty(x.shape, x.dtype)
    launch_1d(ex, kernel("strided:add_scaled", x), x.size, x, g, y, out, i32(x.size), i32(x.shape[-1]))
    return out


_MODES = {"signed": 0, "unit": 1, "mean_std": 2}


def frames(ex, img0, img1, pads, mode, mean_std, dtype=np.float32):
    """Two frames (H, W, 3) BGR or (H, W) gray, uint8 or float32 0..255, as they were
    uploaded -> (2, H + top + bottom, W + left + right, 3) RGB of storage `dtype` (float32,
    float16, or uint16 for bfloat16 bits: the float32 values rounded once), replicate-padded
    by `pads` and normalised (`mode`: "signed", "unit" or "mean_std" with `mean_std` (6,)
    float32 on the device). One kernel."""
    if img0.shape != img1.shape or img0.dtype != img1.dtype or img0.ndim not in (2, 3):
        raise InputError(f"frames: two (H, W, 3) or (H, W) frames of one dtype, got {tuple(img0.shape)} "
                         f"{img0.dtype} and {tuple(img1.shape)} {img1.dtype}")
    name = {np.dtype(np.uint8): "frames:frames_u8", np.dtype(np.float32): "frames:frames_f32"}.get(img0.dtype)
    if name is None:
        raise InputError(f"frames: uint8 or float32 frames, got {img0.dtype}")
    h, w = img0.shape[:2]
    cin = 1 if img0.ndim == 2 else img0.shape[2]
    if cin not in (1, 3):
        raise InputError(f"frames: 1 or 3 channels, got {cin}")
    top, bottom, left, right = pads
    hp, wp = h + top + bottom, w + left + right
    out = ex.empty((2, hp, wp, 3), dtype)
    a, b = (x if x.flags.c_contiguous else ex.xp.ascontiguousarray(x) for x in (img0, img1))
    launch_1d(ex, name + suffix(out), out.size, a, b, mean_std, out, i32(h), i32(w), i32(cin), i32(hp), i32(wp),
              i32(top), i32(left), i32(_MODES[mode]))
    return out
