"""Fully connected layers on the last axis."""
from __future__ import annotations


def linear(x, p):
    """PyTorch nn.Linear: x @ W.T + b.

    x: (..., I) float32. p: {"weight": (O, I), "bias": (O,) optional}. Returns (..., O).
    """
    w = p["weight"]
    lead = x.shape[:-1]
    # One 2-D product keeps the whole layer in a single BLAS call.
    out = x.reshape(-1, x.shape[-1]) @ w.T
    bias = p.get("bias")
    if bias is not None:
        out += bias
    return out.reshape(*lead, w.shape[0])
