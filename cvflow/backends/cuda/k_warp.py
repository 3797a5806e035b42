"""Bilinear sampling and backward warps on the CUDA backend (kernels/sample.cu), as
cvflow/ops/sample.py (pixel coordinates, 0 at the centre of the first pixel)."""
from __future__ import annotations


def bilinear_sample(ex, img, coords, padding="zeros"):
    """img (N, H, W, C) sampled at coords (N, h, w, 2) float32 (x, y) pixels.
    padding "zeros": taps outside contribute 0; "border": taps clamp to the edge.
    Returns (N, h, w, C)."""
    raise NotImplementedError


def resample2d(ex, img, flow):
    """FlowNet2's Resample2d: out[n, y, x] = img[n, y + flow_y, x + flow_x], bilinear,
    taps clamped to the border. img (N, H, W, C), flow (N, H, W, 2) (dx, dy) pixels."""
    raise NotImplementedError


def bilinear_warp_zeros(ex, img, flow):
    """Backward warp with zeros outside (grid_sample zeros, align_corners=True), as
    cvflow.ops.sample.warp(img, flow, "zeros") (GMFlow). Shapes as :func:`resample2d`."""
    raise NotImplementedError
