"""Occlusion from a forward and a backward flow: the forward-backward consistency check.

Where a pixel is visible in both frames, following the forward flow and then the
backward flow returns to the start: fw(x) + bw(x + fw(x)) ~ 0. Where it is not (the
pixel is covered in the other frame), the backward flow there belongs to whatever
covers it, and the sum is large (Sundaram, Brox & Keutzer, ECCV 2010; the thresholds
as in Meister, Hur & Roth, UnFlow, AAAI 2018).
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from cvflow.arrays import get_xp
from cvflow.errors import CvflowTypeError, InputError
from cvflow.ops.sample import warp

__all__ = ["occlusion_mask", "leaves_frame"]


def _describe(a) -> str:
    shape = getattr(a, "shape", None)
    return type(a).__name__ if shape is None else f"shape {tuple(shape)} {a.dtype}"


def _check_flow(name, flow):
    if not hasattr(flow, "shape") or not hasattr(flow, "dtype") or flow.ndim != 3 or flow.shape[2] != 2 \
            or 0 in flow.shape or flow.dtype.kind != "f":
        raise InputError(f"`{name}` must be an (H, W, 2) float flow array, got {_describe(flow)}")
    if not bool(get_xp(flow).isfinite(flow).all()):
        raise InputError(f"`{name}` contains NaN or Inf ({_describe(flow)})")


def _check_threshold(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise CvflowTypeError(f"`{name}` must be a number, got {value!r}")
    if not (math.isfinite(value) and value >= 0):
        raise InputError(f"`{name}` must be a finite number >= 0, got {value}")


def occlusion_mask(fw, bw, a=0.01, b=0.5, out_of_frame=False):
    """Pixels of the first frame that the forward flow `fw` leads to no match in the second.

    fw: (H, W, 2) flow frame 0 -> frame 1, bw: (H, W, 2) flow frame 1 -> frame 0, in px
    (`flow[y, x] = (dx, dy)`, as `calc` returns; NumPy, or CuPy for both). With bw' =
    bw sampled bilinearly at x + fw(x), a pixel is occluded where

        |fw + bw'|^2 > a * (|fw|^2 + |bw'|^2) + b          (px^2)

    a (default 0.01) lets the tolerance grow with the motion, b (default 0.5 px^2) is
    the tolerance at rest: pixels covered by another surface in frame 1.

    Pixels whose target x + fw(x) lies outside frame 1 (x + u < -0.5 or > W - 0.5, or
    y + v < -0.5 or > H - 0.5: in no pixel of it) have no match there either. With
    out_of_frame=False (the default, the consistency check alone) they are marked only
    when the check fails: their sample takes the nearest border pixel's backward flow,
    which usually agrees, so most are not. With out_of_frame=True they are all marked,
    as in MPI-Sintel's occlusion masks.
    occlusion_mask(bw, fw) gives the second frame's mask (pixels uncovered in it).

    Returns an (H, W) bool array (True: occluded), on fw's device.
    """
    _check_flow("fw", fw)
    _check_flow("bw", bw)
    if fw.shape != bw.shape:
        raise InputError(f"`fw` and `bw` must have the same shape, got {_describe(fw)} and {_describe(bw)}")
    if get_xp(fw) is not get_xp(bw):
        raise InputError("`fw` and `bw` must both be NumPy or both CuPy arrays")
    _check_threshold("a", a)
    _check_threshold("b", b)
    if not isinstance(out_of_frame, (bool, np.bool_)):
        raise CvflowTypeError(f"`out_of_frame` must be a bool, got {out_of_frame!r}")
    xp = get_xp(fw)
    fw = fw.astype(xp.float32, copy=False)
    back = warp(bw.astype(xp.float32, copy=False)[None], fw[None], padding="border")[0]
    mismatch = ((fw + back) ** 2).sum(axis=-1)
    scale = (fw ** 2).sum(axis=-1) + (back ** 2).sum(axis=-1)
    occluded = mismatch > xp.float32(a) * scale + xp.float32(b)
    if out_of_frame:
        occluded |= leaves_frame(fw)
    return occluded


def leaves_frame(fw):
    """(H, W) bool: True where x + fw(x) lies in no pixel of the frame (outside [-0.5, W - 0.5] x
    [-0.5, H - 0.5], pixel centres at integers)."""
    xp = get_xp(fw)
    h, w = fw.shape[:2]
    tx = xp.arange(w, dtype=xp.float32)[None, :] + fw[..., 0]
    ty = xp.arange(h, dtype=xp.float32)[:, None] + fw[..., 1]
    return (tx < -0.5) | (tx > w - 0.5) | (ty < -0.5) | (ty > h - 0.5)
