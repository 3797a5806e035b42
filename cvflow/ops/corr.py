"""Correlation of feature maps.

Two families live here: FlowNet's patch correlation (fixed displacement grid)
and RAFT's all-pairs volume with its pooled pyramid and windowed lookup.
"""
from __future__ import annotations

from cvflow.arrays import get_xp  # noqa: F401

# --- RAFT: all-pairs correlation, pyramid, window lookup (owned by the RAFT work) ---
# Level l of RAFT's pyramid is the all-pairs volume average-pooled l times over the
# second frame's axes. Pooling is linear, so it equals correlating with the pooled
# second feature map: both the full-volume path and the on-the-fly path below start
# from `pool_pyramid(fmap2)` and differ only in when the dot products are taken.
import math as _math  # noqa: E402

from cvflow.ops import arena as _arena  # noqa: E402
from cvflow.ops import parallel as _parallel  # noqa: E402
from cvflow.ops.pool import avg_pool2x2 as _avg_pool2x2  # noqa: E402

_CHUNK_BYTES = 16 << 20  # bound on gathered features per on-the-fly chunk
_LOOKUP_PIXELS = 8192     # pixels per lookup piece (few NumPy calls: each re-takes the GIL; see parallel.CHUNK)


def pool_pyramid(fmap, levels):
    """[fmap, pool(fmap), ...]: `levels` maps (N, H >> l, W >> l, D), 2x2 average pooling."""
    out = [fmap]
    for _ in range(levels - 1):
        out.append(_avg_pool2x2(out[-1]))
    return out


def corr_volume_bytes(n, h, w, levels, itemsize=4):
    """Bytes of the full all-pairs pyramid for n pairs of (h, w) feature maps."""
    return sum(n * h * w * (h >> lvl) * (w >> lvl) for lvl in range(levels)) * itemsize


def build_corr(fmap1, fmap2, levels, budget=1 << 30):
    """Correlation state for `corr_lookup`.

    fmap1, fmap2: (N, H, W, D) float32. Below `budget` bytes the full volumes are
    materialised, one matrix product per level; above it only the pooled second
    feature maps are kept and each lookup computes its own dot products.
    Returns a dict: "f1" (N*H*W, D) scaled by 1/sqrt(D), "pyramid", "volumes" (or None).
    """
    xp = get_xp(fmap1)
    n, h, w, d = fmap1.shape
    f1 = fmap1.reshape(n * h * w, d) * fmap1.dtype.type(1 / _math.sqrt(d))
    pyramid = pool_pyramid(fmap2, levels)
    volumes = None
    if corr_volume_bytes(n, h, w, levels, fmap1.dtype.itemsize) <= budget:
        volumes = []
        for f2 in pyramid:
            hl, wl = f2.shape[1:3]
            v = _arena.empty(xp, (n, h * w, hl * wl), f1.dtype)
            _parallel.matmul(f1.reshape(n, h * w, d), f2.reshape(n, hl * wl, d).transpose(0, 2, 1), out=v)
            volumes.append(v.reshape(n * h * w, hl * wl))
    return {"f1": f1, "pyramid": pyramid, "volumes": volumes, "shape": (n, h, w)}


def _axis_taps(pos, radius, size):
    """Integer taps along one axis of the 2r+2 window around `pos` (P,): (2r+2, P), clipped
    into the map, and the (2r+1, P) weights of taps i and i+1 of each sample, zero outside
    the map (grid_sample's zero padding)."""
    xp = get_xp(pos)
    p0 = xp.floor(pos)
    frac = pos - p0
    # clipping far-away (or NaN) corners keeps the integer cast safe; such windows stay outside
    taps = xp.arange(-radius, radius + 2)[:, None] + xp.clip(p0, -radius - 2, size + radius + 1).astype(xp.intp)
    inside = ((taps >= 0) & (taps < size)).astype(pos.dtype)
    return xp.clip(taps, 0, size - 1, out=taps), (1 - frac) * inside[:-1], frac * inside[1:]


def _interpolate_window(taps, wx0, wx1, wy0, wy1, out):
    """taps (S, S, P) at integer [x, y] -> out (S-1, S-1, P) bilinear samples [x, y].

    Every sample of a window is offset by whole pixels, so all share one fractional part
    and bilinear sampling of the window is separable: 2-tap interpolation along x, then
    along y (equal to grid_sample's four-corner sum up to float rounding). Pixels are the
    last axis so every elementwise loop runs over P.
    """
    xp = get_xp(taps)
    u = taps[:-1] * wx0[:, None]
    u += taps[1:] * wx1[:, None]                             # (S-1, S, P)
    xp.multiply(u[:, :-1], wy0, out=out)
    u[:, 1:] *= wy1
    out += u[:, 1:]
    return out


def _taps_on_the_fly(f1, f2, idx, hw, first):
    """Dot products of each pixel's feature with the gathered second-frame features;
    idx (P, K) holds the taps of pixels first .. first + P."""
    xp = get_xp(f1)
    p, k = idx.shape
    d = f1.shape[1]
    flat = f2.reshape(-1, d)
    # pixel p belongs to pair p // hw; its taps index that pair's map
    base = (xp.arange(first, first + p, dtype=idx.dtype) // hw)[:, None] * (f2.shape[1] * f2.shape[2])
    out = xp.empty((p, k), dtype=f1.dtype)
    step = max(1, _CHUNK_BYTES // (k * d * f1.dtype.itemsize))
    for a in range(0, p, step):
        b = min(p, a + step)
        feats = flat[base[a:b] + idx[a:b]]                                  # (c, K, D)
        out[a:b] = xp.einsum("pkd,pd->pk", feats, f1[first + a:first + b])  # batched dots: einsum beats matmul
    return out


def _lookup_share(state, pts, radius, out, first, last):
    """`corr_lookup` for pixels first .. last: writes out[:, :, :, first:last]."""
    xp = get_xp(pts)
    _, h, w = state["shape"]
    p = last - first
    for lvl, f2 in enumerate(state["pyramid"]):
        hl, wl = f2.shape[1:3]
        if hl == 0 or wl == 0:  # pooled away (maps under 2^level px): every tap is outside
            continue
        pos = pts[first:last] * pts.dtype.type(0.5 ** lvl)
        xs, wx0, wx1 = _axis_taps(pos[:, 0], radius, wl)
        ys, wy0, wy1 = _axis_taps(pos[:, 1], radius, hl)
        ys *= wl
        vol = None if state["volumes"] is None else state["volumes"][lvl]
        if vol is not None:  # flat indices into the (P, hl*wl) volume: row p starts at p*hl*wl
            ys += xp.arange(first, last, dtype=ys.dtype) * (hl * wl)
        idx = xs[:, None] + ys[None]                                # (S, S, p) [x, y]
        if vol is not None:
            taps = xp.take(vol.reshape(-1), idx)
        else:
            taps = _taps_on_the_fly(state["f1"], f2, idx.reshape(-1, p).T, h * w, first).T.reshape(idx.shape)
        _interpolate_window(taps, wx0, wx1, wy0, wy1, out[lvl, :, :, first:last])


def corr_lookup(state, coords, radius):
    """Bilinear lookup of the (2r+1)^2 window around `coords` on every pyramid level.

    coords: (N, H, W, 2) float32 pixel positions (x, y) in the second frame at level 0.
    Returns (N, H, W, levels * (2r+1)^2); within a level, channel a*(2r+1)+b holds
    offset (dx, dy) = (a - r, b - r): the x offset is the outer index, as RAFT's.
    The result is a transposed view (channels outermost in memory): it feeds a 1x1
    convolution, whose matrix product takes it without a copy. Pixels are shared
    among threads (gathers and interpolation are memory-bound NumPy loops).
    """
    xp = get_xp(coords)
    n, h, w = state["shape"]
    k = 2 * radius + 1
    pts = coords.reshape(-1, 2)
    p = pts.shape[0]
    levels = len(state["pyramid"])
    out = xp.zeros((levels, k, k, p), dtype=coords.dtype)
    # a pixel's work is its levels * (2r+2)^2 gathered taps: counted so, a map of a few
    # thousand pixels (RAFT's 55x128) is still cut into one piece per thread
    per_px = levels * (k + 1) ** 2
    _parallel.map_spans(lambda a, b: _lookup_share(state, pts, radius, out, a, b), p, per_px, xp,
                        _LOOKUP_PIXELS * per_px)
    return out.reshape(-1, p).T.reshape(n, h, w, -1)


# --- FlowNet: patch correlation (owned by the FlowNet work) ---


def patch_correlation(f1, f2, max_displacement=20, stride=2, block=16):
    """FlowNetC correlation (kernel 1, zero padding), channel mean of products.

    f1, f2: (N, H, W, C) feature maps. For displacement (dx, dy) = (stride*i, stride*j),
    i, j in -r..r with r = max_displacement // stride, output channel (j + r)*(2r+1) + (i + r)
    holds sum_c f1[y, x, c] * f2[y + dy, x + dx, c] / C, taps outside f2 reading 0.
    Returns (N, H, W, (2r+1)**2) in f1's dtype.
    """
    xp = get_xp(f1)
    n, h, w, c = f1.shape
    r = max_displacement // stride
    d = 2 * r + 1
    m = r * stride
    blk = min(block, w)
    nb = -(-w // blk)
    wp = nb * blk
    # Each block of `blk` output columns sees `blk + 2m` columns of f2: one small matmul
    # per (row, block, dy) gives every dx at once, and the dx band is read off its diagonals.
    a = xp.pad(f1, ((0, 0), (0, 0), (0, wp - w), (0, 0))).reshape(n, h, nb, blk, c)
    b = xp.pad(f2, ((0, 0), (m, m), (m, m + wp - w), (0, 0)))
    span = blk + 2 * m
    out = xp.empty((n, h, nb, blk, d, d), dtype=f1.dtype)
    sb = b.strides
    for j in range(d):
        rows = b[:, j * stride:j * stride + h]
        win = xp.lib.stride_tricks.as_strided(
            rows, shape=(n, h, nb, span, c), strides=(sb[0], sb[1], blk * sb[2], sb[2], sb[3]))
        prod = xp.matmul(a, win.swapaxes(-1, -2))          # (n, h, nb, blk, span)
        sp = prod.strides
        band = xp.lib.stride_tricks.as_strided(
            prod, shape=(n, h, nb, blk, d), strides=(sp[0], sp[1], sp[2], sp[3] + sp[4], stride * sp[4]))
        out[:, :, :, :, j] = band
    out = out.reshape(n, h, wp, d * d)[:, :, :w]
    return out / f1.dtype.type(c)
