"""Folding an inference BatchNorm into the convolution before it.

conv (weight W (O, C, kh, kw), bias b or none) then BatchNorm (gamma, beta, running
mean mu and variance var, eps) is one convolution: W' = W * s, b' = (b - mu) * s + beta,
s = gamma / sqrt(var + eps) per output channel. Computed in float64 on the host and
rounded once, so the folded layer differs from the two-step one by float32 rounding of
the products only (NeuFlow v2's authors fold the same way in their demo).
"""
from __future__ import annotations

import numpy as np

from cvflow.errors import InputError


def fold_conv_bn(weight, bias, bn, eps=1e-5):
    """(W', b') float32 host arrays of conv (weight, bias or None) followed by eval BatchNorm.

    weight: (O, C, kh, kw); bias: (O,) or None; bn: {"weight", "bias", "running_mean",
    "running_var"}, each (O,). Host (NumPy) or device arrays with `.get()`.
    """
    w = _host(weight)
    if w.ndim != 4:
        raise InputError(f"conv weight must be (O, C, kh, kw), got shape {w.shape} {w.dtype}")
    o = w.shape[0]
    parts = {k: _host(bn[k]) for k in ("weight", "bias", "running_mean", "running_var")}
    for k, v in parts.items():
        if v.shape != (o,):
            raise InputError(f"batch norm {k!r} must be ({o},) for a conv with {o} outputs, "
                             f"got shape {v.shape} {v.dtype}")
    scale = parts["weight"] / np.sqrt(parts["running_var"] + eps)
    b = np.zeros(o) if bias is None else _host(bias)
    folded_w = (w * scale[:, None, None, None]).astype(np.float32)
    folded_b = ((b - parts["running_mean"]) * scale + parts["bias"]).astype(np.float32)
    return folded_w, folded_b


def _host(a) -> np.ndarray:
    get = getattr(a, "get", None)
    return np.asarray(get() if get is not None else a, dtype=np.float64)
