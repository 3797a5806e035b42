"""RAFT's all-pairs correlation on the CUDA backend: pyramid and window lookup
(kernels/pool.cu, kernels/corr_lookup.cu).

Same numbers as cvflow/ops/corr.py. Level l of the pyramid correlates the first frame's
features (scaled by 1/sqrt(D)) with the second frame's features average-pooled l times
(2x2, odd trailing rows/columns dropped): pooling is linear, so this is RAFT's pooled
volume. The lookup samples the (2r+1)^2 window around each coordinate bilinearly with
zeros outside the map; within a level, channel a*(2r+1) + b holds offset
(dx, dy) = (a - r, b - r) (the x offset outermost, as RAFT's).

Storage: float32, or half (`k_dtype`): the features' storage dtype is that of the volumes,
the on-the-fly taps and the lookup's output (issue 20: the correlation volume is stored in
half; the products and the interpolation sum in float32). Coordinates stay float32 (half
coordinates are converted): a sub-pixel position is not rounded to half.
"""
from __future__ import annotations

import math

from cvflow.backends.cuda import k_glue
from cvflow.backends.cuda.executor import contiguous, f32, i32, launch_1d
from cvflow.backends.cuda.k_dtype import avg_pool2x2, kernel, like, storage
from cvflow.errors import InputError

_TAPS_BYTES = 64 << 20  # bound on the on-the-fly lookup's tap buffer (one pixel chunk, one level)


def pool_pyramid(ex, f2, levels):
    """[f2, pool(f2), ...]: `levels` maps (N, H >> l, W >> l, D), 2x2 average pooling, in
    f2's storage dtype."""
    out = [contiguous(ex, f2, storage(f2))]
    for _ in range(levels - 1):
        out.append(avg_pool2x2(ex, out[-1]))
    return out


def _scaled(ex, f1):
    """(N*H*W, D) first-frame features times 1/sqrt(D), rounded as the NumPy op."""
    d = f1.shape[-1]
    return k_glue.scale(ex, f1.reshape(-1, d), 1 / math.sqrt(d))


def corr_pyramid(ex, f1, f2, levels):
    """All-pairs volumes: f1, f2 (N, H, W, D) float32 (or half storage: f1's) -> list of
    `levels` arrays (N*H*W, Hl, Wl), level l = (f1 / sqrt(D)) . pool^l(f2) (one matrix
    product each)."""
    n, h, w, d = f1.shape
    f1s = _scaled(ex, f1).reshape(n, h * w, d)
    volumes = []
    for f2l in pool_pyramid(ex, like(ex, f2, f1s), levels):
        hl, wl = f2l.shape[1:3]
        v = ex.empty((n, h * w, hl * wl), f1s.dtype)
        ex.matmul(f1s, f2l.reshape(n, hl * wl, d).transpose(0, 2, 1), out=v)
        volumes.append(v.reshape(n * h * w, hl, wl))
    return volumes


def _check(coords, p, radius):
    if tuple(coords.shape[-1:]) != (2,) or coords.size != 2 * p:
        raise InputError(f"coords must be (N, H, W, 2) with N*H*W = {p}, got shape {tuple(coords.shape)}")
    if not 0 <= radius <= 4:
        raise InputError(f"radius must be 0..4, got {radius}")


def corr_lookup(ex, pyramid, coords, radius):
    """Window lookup in the volumes of :func:`corr_pyramid`.

    pyramid: its list; coords: (N, H, W, 2) float32 (x, y) positions in frame 2 at level 0;
    radius 0..4. Returns (N, H, W, levels*(2r+1)^2) in the volumes' storage dtype, C-contiguous.
    """
    p = pyramid[0].shape[0]
    _check(coords, p, radius)
    pts = k_glue.floats(ex, coords)
    k = 2 * radius + 1
    dtype = storage(pyramid[0])
    out = ex.empty(tuple(coords.shape[:-1]) + (len(pyramid) * k * k,), dtype)
    vols = [contiguous(ex, v, dtype) for v in pyramid]
    if len(pyramid) == 4:  # RAFT's four levels: one launch
        dims = [i32(d) for v in vols for d in v.shape[1:]]
        launch_1d(ex, kernel("corr_lookup:raft_corr_lookup4", out), p * 4 * k * k, *vols, pts, out, i32(p), *dims,
                  i32(radius))
        return out
    for lvl, vol in enumerate(vols):
        hl, wl = vol.shape[1:]
        launch_1d(ex, kernel("corr_lookup:raft_corr_lookup", out), p * k * k, vol, pts, out, i32(p),
                  i32(hl), i32(wl), i32(radius), i32(lvl), i32(len(pyramid)), f32(0.5 ** lvl))
    return out


def corr_lookup_on_the_fly(ex, f1, f2_pyramid, coords, radius):
    """:func:`corr_lookup` without the volumes (memory-bounded, for large frames): each
    window's dot products are taken when looked up.

    f1: (N, H, W, D) float32 or half storage (unscaled); f2_pyramid: :func:`pool_pyramid`
    of frame 2. coords, radius and the result as :func:`corr_lookup` (f1's storage dtype;
    the taps are stored in it too, as the volumes would be).
    """
    n, h, w, d = f1.shape
    p = n * h * w
    _check(coords, p, radius)
    pts = k_glue.floats(ex, coords)
    f1c = contiguous(ex, f1, storage(f1))  # the kernel scales by 1/sqrt(D) as it reads (as _scaled rounds)
    inv = f32(1 / math.sqrt(d))
    k, s = 2 * radius + 1, 2 * radius + 2
    levels = len(f2_pyramid)
    out = ex.empty((n, h, w, levels * k * k), f1c.dtype)
    rows = max(1, min(p, _TAPS_BYTES // (f1c.dtype.itemsize * s * s)))
    taps = ex.empty((rows, s, s), f1c.dtype)
    for lvl, f2l in enumerate(f2_pyramid):
        f2l = contiguous(ex, like(ex, f2l, f1c), f1c.dtype)
        hl, wl = f2l.shape[1:3]
        scale = f32(0.5 ** lvl)
        for p0 in range(0, p, rows):
            m = min(rows, p - p0)
            if hl and wl:
                launch_1d(ex, kernel("corr_lookup:raft_corr_dots", f1c), m * s * s, f1c, f2l, pts, taps[:m], i32(p0),
                          i32(m), i32(h * w), i32(hl), i32(wl), i32(d), i32(radius), scale, inv)
            launch_1d(ex, kernel("corr_lookup:raft_corr_interp", f1c), m * k * k, taps[:m], pts, out, i32(p0), i32(m),
                      i32(hl), i32(wl), i32(radius), i32(lvl), i32(levels), scale)
    return out
