"""Bilinear sampling and backward warps on the CUDA backend (kernels/sample.cu), as
cvflow/ops/sample.py (pixel coordinates, 0 at the centre of the first pixel).

Storage (`k_dtype`): the image and the output in float32 or half storage (the output takes
the image's); coordinates and flows stay float32 (half ones are converted): a sub-pixel
position is not rounded to half."""
from __future__ import annotations

from cvflow.backends.cuda.executor import i32, launch_1d
from cvflow.backends.cuda.k_dtype import kernel
from cvflow.backends.cuda.k_glue import floats, rows
from cvflow.errors import InputError

_PADDING = {"zeros": 0, "border": 1}


def _sample(ex, img, pos, padding, is_flow):
    if padding not in _PADDING:
        raise InputError(f"padding must be 'zeros' or 'border', got {padding!r}")
    pos = floats(ex, pos)
    n, hh, ww, c = img.shape
    base, stride, offset = rows(ex, img)  # a channel slice is read in place
    if pos.ndim != 4 or pos.shape[0] != n or pos.shape[-1] != 2:
        raise InputError(f"coordinates must be (N, h, w, 2) with N = {n}, got {tuple(pos.shape)}")
    _, h, w, _ = pos.shape
    out = ex.empty((n, h, w, c), base.dtype)
    launch_1d(ex, kernel("sample:bilinear_sample", base), out.size, base, pos, out, i32(n), i32(hh), i32(ww), i32(c),
              i32(h), i32(w), i32(is_flow), i32(_PADDING[padding]), i32(stride), i32(offset))
    return out


def bilinear_sample(ex, img, coords, padding="zeros"):
    """img (N, H, W, C) sampled at coords (N, h, w, 2) float32 (x, y) pixels.
    padding "zeros": taps outside contribute 0; "border": taps clamp to the edge.
    Returns (N, h, w, C)."""
    return _sample(ex, img, coords, padding, 0)


def warp(ex, img, flow, padding="zeros"):
    """Backward warp out[n, y, x] = img[n, y + flow_y, x + flow_x] (bilinear), as
    cvflow.ops.sample.warp. img (N, H, W, C), flow (N, H, W, 2) (dx, dy) pixels."""
    if flow.shape[1:3] != img.shape[1:3]:
        raise InputError(f"flow {tuple(flow.shape)} must cover img {tuple(img.shape)}")
    return _sample(ex, img, flow, padding, 1)


def resample2d(ex, img, flow):
    """FlowNet2's Resample2d: out[n, y, x] = img[n, y + flow_y, x + flow_x], bilinear,
    taps clamped to the border. img (N, H, W, C), flow (N, H, W, 2) (dx, dy) pixels."""
    return warp(ex, img, flow, "border")


def bilinear_warp_zeros(ex, img, flow):
    """Backward warp with zeros outside (grid_sample zeros, align_corners=True), as
    cvflow.ops.sample.warp(img, flow, "zeros") (GMFlow). Shapes as :func:`resample2d`."""
    return warp(ex, img, flow, "zeros")
