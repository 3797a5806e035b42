"""Bilinear sampling at arbitrary pixel coordinates, and backward warping.

Coordinates are in pixels with 0 at the centre of the first pixel (PyTorch's
``grid_sample(..., align_corners=True)`` after mapping [-1, 1] to [0, size-1]).
"""
from __future__ import annotations

from cvflow.backend import get_xp


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
    x0 = x0f.astype(xp.int64)
    y0 = y0f.astype(xp.int64)
    flat = img.reshape(n, hh * ww, c)
    base = (xp.arange(n) * (hh * ww)).reshape(n, 1, 1)
    flat = flat.reshape(n * hh * ww, c)
    out = None
    for dy, wy in ((0, 1 - ay), (1, ay)):
        for dx, wx in ((0, 1 - ax), (1, ax)):
            xi = x0 + dx
            yi = y0 + dy
            wgt = wy * wx
            if padding == "zeros":
                inside = (xi >= 0) & (xi < ww) & (yi >= 0) & (yi < hh)
                wgt = wgt * inside
            xi = xp.clip(xi, 0, ww - 1)
            yi = xp.clip(yi, 0, hh - 1)
            tap = flat[base + yi * ww + xi] * wgt[..., None]
            out = tap if out is None else out + tap
    return out


def warp(img, flow, padding="zeros"):
    """Backward warp: out[n, y, x] = img[n, y + flow_y, x + flow_x].

    img: (N, H, W, C); flow: (N, H, W, 2) in pixels, (dx, dy).
    """
    xp = get_xp(img)
    n, h, w, _ = img.shape
    gy, gx = xp.meshgrid(xp.arange(h, dtype=flow.dtype), xp.arange(w, dtype=flow.dtype), indexing="ij")
    return bilinear_sample(img, gx + flow[..., 0], gy + flow[..., 1], padding)
