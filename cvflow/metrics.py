"""Optical-flow accuracy metrics (end-point error, outlier rates, KITTI Fl).

All functions take ``flow`` and ``gt`` as (H, W, 2) arrays in px and an optional
``valid`` (H, W) mask (bool, or numeric with nonzero = valid; default: every
pixel). Ground truth marked unknown -- Middlebury's convention, |u| or |v| >
``UNKNOWN_FLOW_THRESH`` (1e9), or non-finite -- is excluded as well, unless
``unknown_thresh=None``. Rates are returned as **fractions** in [0, 1], not
percentages (KITTI reports ``100 * fl_all``). Computation is in float64.
"""

import numpy as np

from cvflow.errors import InputError
from cvflow.io.flo import check_flow_array, check_valid_mask

__all__ = ["epe_map", "epe", "outlier_rates", "fl_all", "known_flow", "UNKNOWN_FLOW_THRESH"]

UNKNOWN_FLOW_THRESH = 1e9  # Middlebury: a component above this marks the pixel's flow unknown


def known_flow(flow, unknown_thresh=UNKNOWN_FLOW_THRESH):
    """(H, W) bool: pixels whose flow is known, i.e. finite with |u| and |v| <= `unknown_thresh`
    (Middlebury stores unknown flow as values above 1e9)."""
    f = check_flow_array(flow)
    with np.errstate(invalid="ignore"):
        return np.isfinite(f).all(axis=2) & (np.abs(f) <= unknown_thresh).all(axis=2)


def _check_pair(flow, gt):
    f = check_flow_array(flow, "flow")
    g = check_flow_array(gt, "gt")
    if f.shape != g.shape:
        raise InputError(f"flow and gt shapes differ: flow {f.shape} vs gt {g.shape}")
    return f.astype(np.float64), g.astype(np.float64)


def _check_mask(valid, gt, unknown_thresh):
    """(H, W) bool mask of the pixels to score (`valid` and known ground truth); at least one."""
    shape = np.shape(gt)[:2]
    mask = np.ones(shape, dtype=bool) if valid is None else check_valid_mask(valid, shape)
    if not mask.any():
        raise InputError("valid mask selects no pixels; the metric is undefined")
    if unknown_thresh is not None:
        mask = mask & known_flow(gt, unknown_thresh)
        if not mask.any():
            raise InputError(f"gt flow is unknown (|u| or |v| > {unknown_thresh:g}, or not finite) at every "
                             "valid pixel; the metric is undefined")
    return mask


def epe_map(flow, gt):
    """Per-pixel end-point error ``|flow - gt|`` (Euclidean), (H, W) float64 px."""
    f, g = _check_pair(flow, gt)
    d = f - g
    return np.hypot(d[..., 0], d[..., 1])


def epe(flow, gt, valid=None, unknown_thresh=UNKNOWN_FLOW_THRESH):
    """Mean end-point error (px) over valid pixels with known gt, as a Python float."""
    err = epe_map(flow, gt)
    return float(err[_check_mask(valid, gt, unknown_thresh)].mean())


def outlier_rates(flow, gt, valid=None, thresholds=(1, 3, 5), unknown_thresh=UNKNOWN_FLOW_THRESH):
    """Fraction of valid pixels (with known gt) whose EPE exceeds each threshold.

    Returns:
        dict ``{t: fraction}`` keyed by the given thresholds (px), e.g. ``{1: .., 3: .., 5: ..}``.
    """
    err = epe_map(flow, gt)
    e = err[_check_mask(valid, gt, unknown_thresh)]
    ts = tuple(thresholds)
    if not ts or not all(np.isscalar(t) and np.isreal(t) and np.isfinite(t) for t in ts):
        raise InputError(f"thresholds must be a non-empty sequence of finite numbers, got {thresholds!r}")
    return {t: float((e > t).mean()) for t in ts}


def fl_all(flow, gt, valid=None, unknown_thresh=UNKNOWN_FLOW_THRESH):
    """KITTI Fl-all as a fraction: valid pixels with EPE > 3 px **and** EPE > 5 % of |gt|."""
    f, g = _check_pair(flow, gt)
    d = f - g
    err = np.hypot(d[..., 0], d[..., 1])
    mag = np.hypot(g[..., 0], g[..., 1])
    mask = _check_mask(valid, gt, unknown_thresh)
    outlier = (err > 3.0) & (err > 0.05 * mag)
    return float(outlier[mask].mean())
