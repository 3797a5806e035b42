"""Bilinear sampling at arbitrary pixel coordinates, and backward warping.

Coordinates are in pixels with 0 at the centre of the first pixel (PyTorch's
``grid_sample(..., align_corners=True)`` after mapping [-1, 1] to [0, size-1]).
"""
from __future__ import annotations

from cvflow.arrays import get_xp


def bilinear_sample(img, x, y, padding="zeros"):
    """Sample img at (x, y).

    img: (N, H, W, C); x, y: (N, h, w) float pixel coordinates.
    padding="zeros": taps outside the image contribute 0 (grid_sample zeros).
    padding="border": tap indices clamp to the edge (FlowNet2's Resample2d; equal to
    grid_sample's border mode).
    Returns (N, h, w, C) in img's dtype.
    """
    xp = get_xp(img)
    n, hh, ww, c = img.shape
    x0f = xp.floor(x)
    y0f = xp.floor(y)
    ax = (x - x0f).astype(img.dtype)
    ay = (y - y0f).astype(img.dtype)
    itype = xp.int32 if n * hh * ww < 2**31 else xp.int64  # narrower indices: less traffic
    # Far-away (or NaN) corners clipped to just outside keep the integer cast defined;
    # both of their taps stay outside, so nothing else changes.
    x0 = xp.fmin(xp.fmax(x0f, -2, out=x0f), ww, out=x0f).astype(itype)  # fmax: NaN -> -2
    y0 = xp.fmin(xp.fmax(y0f, -2, out=y0f), hh, out=y0f).astype(itype)
    flat = img.reshape(n * hh * ww, c)
    base = (xp.arange(n, dtype=itype) * (hh * ww)).reshape(n, 1, 1)
    # Per tap row / column: the clamped index part and its weight (0 outside, for zeros).
    rows, cols = [], []
    for d, w in ((0, 1 - ay), (1, ay)):
        yi = y0 + d
        if padding == "zeros":
            w = w * ((yi >= 0) & (yi < hh))
        rows.append((xp.clip(yi, 0, hh - 1, out=yi) * ww + base, w))
    for d, w in ((0, 1 - ax), (1, ax)):
        xi = x0 + d
        if padding == "zeros":
            w = w * ((xi >= 0) & (xi < ww))
        cols.append((xp.clip(xi, 0, ww - 1, out=xi), w))
    out = xp.zeros(x.shape + (c,), img.dtype)
    tap = xp.empty_like(out)
    wgt = xp.empty(x.shape, img.dtype)
    idx = xp.empty(x.shape, itype)
    for r, wy in rows:
        for q, wx in cols:
            xp.add(r, q, out=idx)
            xp.multiply(wy, wx, out=wgt)
            xp.take(flat, idx.reshape(-1), axis=0, out=tap.reshape(-1, c))
            tap *= wgt[..., None]
            out += tap
    return out


def warp(img, flow, padding="zeros"):
    """Backward warp: out[n, y, x] = img[n, y + flow_y, x + flow_x].

    img: (N, H, W, C); flow: (N, H, W, 2) in pixels, (dx, dy).
    """
    xp = get_xp(img)
    n, h, w, _ = img.shape
    gy, gx = xp.meshgrid(xp.arange(h, dtype=flow.dtype), xp.arange(w, dtype=flow.dtype), indexing="ij")
    return bilinear_sample(img, gx + flow[..., 0], gy + flow[..., 1], padding)
