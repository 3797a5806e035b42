"""Flow from feature matching: softmax over correlations, expectation of coordinates.

GMFlow's matching: for each pixel of frame 0 the correlation with candidate pixels
of frame 1 (all of them, or a (2r+1)^2 window) is turned into a distribution by a
softmax; the expected matching position minus the pixel's own position is the flow.
"""
from __future__ import annotations

import numpy as np

from cvflow.arrays import get_xp
from cvflow.ops.attention import attention, neighbourhood_scores, softmax
from cvflow.ops.corr import patch_correlation

# Score of window positions outside frame 1: excluded from the softmax (reference value).
_INVALID = -1e9


def pixel_grid(h, w, xp=np):
    """(H*W, 2) float32 (x, y) pixel coordinates in row-major order."""
    gy, gx = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
    return xp.asarray(np.stack([gx.ravel(), gy.ravel()], axis=-1))


def global_matching(f0, f1):
    """Flow (N, H, W, 2) from softmax over all pixels of f1 of <f0, f1> / sqrt(C).

    f0, f1: (N, H, W, C) float32. The flow is the expected (x, y) of the match minus (x, y).
    """
    xp = get_xp(f0)
    n, h, w, c = f0.shape
    grid = pixel_grid(h, w, xp)
    q = f0.reshape(n, h * w, c)
    k = f1.reshape(n, h * w, c)
    v = xp.broadcast_to(grid, (n, h * w, 2))
    match = attention(q, k, v)
    return (match - grid).reshape(n, h, w, 2)


def window_offsets(radius, xp=np):
    """((2r+1)^2, 2) float32 (dx, dy) offsets, dy-major (index (dy+r)*(2r+1) + dx+r)."""
    d = np.arange(-radius, radius + 1, dtype=np.float32)
    dy, dx = np.meshgrid(d, d, indexing="ij")
    return xp.asarray(np.stack([dx.ravel(), dy.ravel()], axis=-1))


def window_valid(h, w, radius, xp=np):
    """(H, W, (2r+1)^2) bool: the offset of each window position stays inside an H x W map."""
    off = window_offsets(radius).astype(np.int64)
    gy, gx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    x = gx[..., None] + off[:, 0]
    y = gy[..., None] + off[:, 1]
    return xp.asarray((x >= 0) & (x < w) & (y >= 0) & (y < h))


def local_matching(f0, f1, radius, correlate=patch_correlation):
    """Flow (N, H, W, 2) from softmax over the (2r+1)^2 window of f1 around each pixel.

    Window positions outside f1 are excluded. f0, f1: (N, H, W, C) float32. correlate:
    as in `neighbourhood_scores`.
    """
    xp = get_xp(f0)
    _, h, w, _ = f0.shape
    scores = neighbourhood_scores(f0, f1, radius, correlate)
    valid = window_valid(h, w, radius, xp)
    scores = xp.where(valid, scores, scores.dtype.type(_INVALID))
    prob = softmax(scores, axis=-1)
    n, _, _, k = prob.shape
    flow = prob.reshape(-1, k) @ window_offsets(radius, xp)
    return flow.reshape(n, h, w, 2)
