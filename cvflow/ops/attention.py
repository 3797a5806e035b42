"""Scaled dot-product attention: global (chunked) and over local neighbourhoods.

Scores are built a block at a time (several small problems, or a band of query
rows of a large one) so memory stays bounded on large frames; the softmax of each
row is exact (max-subtracted), so blocking changes nothing but rounding.
"""
from __future__ import annotations

import math

import numpy as np

from cvflow.arrays import get_xp
from cvflow.ops.corr import patch_correlation

# Bytes of one block of attention scores: bounds memory on large frames, and stays
# near the cache between the products and the softmax passes while giving BLAS
# enough rows (8 MB measured fastest on 2-core CPUs).
_SCORE_BYTES = 8 << 20


def softmax(x, axis=-1):
    """Numerically stable softmax along `axis` (max subtracted before exp)."""
    xp = get_xp(x)
    e = xp.exp(x - x.max(axis=axis, keepdims=True))
    e /= e.sum(axis=axis, keepdims=True)
    return e


def attention(q, k, v, bias=None, scale=None):
    """softmax(q @ k^T * scale + bias) @ v.

    q: (..., L, C), k: (..., S, C), v: (..., S, D) with equal leading axes.
    bias: None or broadcastable to (..., L, S) (e.g. a shifted-window mask).
    scale: default 1/sqrt(C). Returns (..., L, D) in q's dtype.
    Work goes in blocks of about _SCORE_BYTES of scores: many small problems
    (windows) per batched product, or a band of query rows of one large problem.
    """
    xp = get_xp(q)
    *lead, n_q, c = q.shape
    n_k, d = k.shape[-2], v.shape[-1]
    inv = q.dtype.type(1.0 / math.sqrt(c) if scale is None else scale)
    batch = math.prod(lead)
    qb = q.reshape(batch, n_q, c)
    kt = k.reshape(batch, n_k, c).swapaxes(-1, -2)
    vb = v.reshape(batch, n_k, d)
    bb = None if bias is None else xp.broadcast_to(bias, (*lead, n_q, n_k))  # a view, not a copy
    per_problem = n_q * n_k * q.itemsize
    group = max(1, _SCORE_BYTES // per_problem)
    rows = n_q if group > 1 else max(1, min(n_q, _SCORE_BYTES // (n_k * q.itemsize)))
    out = xp.empty((batch, n_q, d), dtype=q.dtype)
    for b0 in range(0, batch, group):
        b1 = min(batch, b0 + group)
        bias_g = None
        if bb is not None and not lead:
            bias_g = bb[None]
        elif bb is not None:   # this group's bias, (g, L, S): only these problems are materialised
            idx = np.unravel_index(np.arange(b0, b1), lead)
            bias_g = bb[tuple(xp.asarray(i) for i in idx)]
        for r0 in range(0, n_q, rows):
            r1 = min(n_q, r0 + rows)
            s = xp.matmul(qb[b0:b1, r0:r1], kt[b0:b1])
            s *= inv
            if bias_g is not None:
                s += bias_g[:, r0:r1]
            s -= s.max(axis=-1, keepdims=True)
            xp.exp(s, out=s)
            # Normalising after the product touches D columns instead of S.
            o = xp.matmul(s, vb[b0:b1])
            o /= s.sum(axis=-1, keepdims=True)
            out[b0:b1, r0:r1] = o
    return out.reshape(*lead, n_q, d)


def neighbourhood_scores(q, k, radius, correlate=patch_correlation):
    """Dot products of each query with the keys in its (2r+1)^2 neighbourhood, / sqrt(C).

    q, k: (N, H, W, C). Keys outside the map read as zero (so score 0).
    Returns (N, H, W, (2r+1)^2), offset (dy, dx) at index (dy+r)*(2r+1) + (dx+r).
    correlate: `patch_correlation` or another implementation of it (a backend's).
    """
    c = q.shape[-1]
    # patch_correlation averages over channels; rescale the mean to a 1/sqrt(C) dot product.
    s = correlate(q, k, radius, 1)
    s *= q.dtype.type(math.sqrt(c))
    return s


def shift_neighbours(x, radius):
    """(N, H, W, D) -> (N, H, W, (2r+1)^2, D): the zero-padded neighbourhood of each pixel."""
    xp = get_xp(x)
    n, h, w, d = x.shape
    k = 2 * radius + 1
    xpad = xp.pad(x, ((0, 0), (radius, radius), (radius, radius), (0, 0)))
    out = xp.empty((n, h, w, k * k, d), dtype=x.dtype)
    for i in range(k):
        for j in range(k):
            out[:, :, :, i * k + j] = xpad[:, i:i + h, j:j + w]
    return out


def local_attention(q, k, v, radius, correlate=patch_correlation):
    """Attention of each pixel over its (2r+1)^2 neighbourhood, zero padding at the border.

    Outside the map keys are zero (score 0, still in the softmax) and values are zero,
    as PyTorch's unfold with padding gives. q, k: (N, H, W, C); v: (N, H, W, D).
    Returns (N, H, W, D). correlate: as in `neighbourhood_scores`.
    """
    prob = softmax(neighbourhood_scores(q, k, radius, correlate), axis=-1)
    vn = shift_neighbours(v, radius)
    return (prob[..., None] * vn).sum(axis=-2)
