"""Upsampling on the CUDA backend (kernels/upsample.cu): RAFT/GMFlow convex upsampling
and bilinear resizing, same numbers as cvflow/ops/upsample.py."""
from __future__ import annotations


def convex_upsample(ex, flow, mask, factor=8):
    """flow (N, H, W, C) coarse map, mask (N, H, W, 9*factor^2) logits (channel
    k*factor^2 + i*factor + j: neighbour k of the 3x3, row-major; sub-pixel (i, j)).
    Returns (N, factor*H, factor*W, C): per fine pixel, the softmax-weighted mix of the
    3x3 coarse neighbours (zeros outside) times `factor`."""
    raise NotImplementedError


def resize_bilinear(ex, x, out_h, out_w, align_corners):
    """Bilinear resize of x (N, H, W, C) to (N, out_h, out_w, C), PyTorch's F.interpolate
    arithmetic (both corner conventions)."""
    raise NotImplementedError
