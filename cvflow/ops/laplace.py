"""SEA-RAFT's uncertainty: a mixture of two Laplace distributions of the flow error.

Per pixel the model predicts `info` = [w0, w1, raw_b0, raw_b1]: mixture logits and raw
log-scales. The authors' likelihood (core/raft.py, training loss) uses the scales
b0 = exp(clamp(raw_b0, 0, var_max)) (the broad component) and
b1 = exp(clamp(raw_b1, var_min, 0)) (the sharp one), with weights softmax(w0, w1), per
flow axis. A Laplace distribution of scale b has E|e| = b, so the mixture's expected
absolute error is softmax(w) . (b0, b1), in px. (The authors' demo heatmap draws
softmax(w) . log b instead: a log-scale, not px.)
"""
from __future__ import annotations

from cvflow.arrays import get_xp
from cvflow.errors import InputError


def mixture_expected_error(info, var_min=0.0, var_max=10.0):
    """info (..., 4) float32 [w0, w1, raw_b0, raw_b1] -> (...) float32 expected |error| in px
    per flow axis: softmax(w0, w1) . (exp(clamp(raw_b0, 0, var_max)), exp(clamp(raw_b1, var_min, 0)))."""
    if getattr(info, "ndim", 0) < 1 or info.shape[-1] != 4:
        raise InputError(f"info must have 4 channels in its last axis, got shape {tuple(getattr(info, 'shape', ()))} "
                         f"{getattr(info, 'dtype', type(info).__name__)}")
    xp = get_xp(info)
    w0, w1 = info[..., 0], info[..., 1]
    m = xp.maximum(w0, w1)
    e0, e1 = xp.exp(w0 - m), xp.exp(w1 - m)
    b0 = xp.exp(xp.clip(info[..., 2], 0.0, var_max))
    b1 = xp.exp(xp.clip(info[..., 3], var_min, 0.0))
    return ((e0 * b0 + e1 * b1) / (e0 + e1)).astype(info.dtype, copy=False)
