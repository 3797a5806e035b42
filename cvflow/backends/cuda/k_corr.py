"""RAFT's all-pairs correlation on the CUDA backend: pyramid and window lookup
(kernels/pool.cu, kernels/corr_lookup.cu).

Same numbers as cvflow/ops/corr.py. Level l of the pyramid correlates the first frame's
features (scaled by 1/sqrt(D)) with the second frame's features average-pooled l times
(2x2, odd trailing rows/columns dropped): pooling is linear, so this is RAFT's pooled
volume. The lookup samples the (2r+1)^2 window around each coordinate bilinearly with
zeros outside the map; within a level, channel a*(2r+1) + b holds offset
(dx, dy) = (a - r, b - r) (the x offset outermost, as RAFT's).
"""
from __future__ import annotations


def pool_pyramid(ex, f2, levels):
    """[f2, pool(f2), ...]: `levels` maps (N, H >> l, W >> l, D), 2x2 average pooling."""
    raise NotImplementedError


def corr_pyramid(ex, f1, f2, levels):
    """All-pairs volumes: f1, f2 (N, H, W, D) float32 -> list of `levels` arrays
    (N*H*W, Hl*Wl), level l = (f1 / sqrt(D)) . pool^l(f2) (one matrix product each)."""
    raise NotImplementedError


def corr_lookup(ex, pyramid, coords, radius):
    """Window lookup in the volumes of :func:`corr_pyramid`.

    pyramid: its list; coords: (N, H, W, 2) float32 (x, y) positions in frame 2 at level 0;
    radius 0..4. Returns (N, H, W, levels*(2r+1)^2) float32, C-contiguous.
    """
    raise NotImplementedError


def corr_lookup_on_the_fly(ex, f1, f2_pyramid, coords, radius):
    """:func:`corr_lookup` without the volumes (memory-bounded, for large frames): each
    window's dot products are taken when looked up.

    f1: (N, H, W, D) float32 (unscaled); f2_pyramid: :func:`pool_pyramid` of frame 2.
    coords, radius and the result as :func:`corr_lookup`.
    """
    raise NotImplementedError
