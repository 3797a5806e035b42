"""Pooling, NHWC."""
from __future__ import annotations


def avg_pool2x2(x):
    """2x2 average pooling with stride 2; odd trailing rows/columns are dropped (as PyTorch)."""
    n, h, w, c = x.shape
    h2, w2 = h // 2, w // 2
    v = x[:, :2 * h2, :2 * w2].reshape(n, h2, 2, w2, 2, c)
    return v.mean(axis=(2, 4), dtype=x.dtype)
