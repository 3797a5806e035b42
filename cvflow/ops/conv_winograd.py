"""Winograd F(2x2, 3x3): the transforms of a stride-1 3x3 convolution.

A 2x2 block of outputs needs a 4x4 input tile d. With V = B^T d B (per channel) and
U = G w G^T (per input/output channel pair), the block is A^T [sum_c V * U] A: 16
products per block, one matrix product per tile position (16 of them), instead of 36
multiply-adds. The transforms use only 0, +-1 and +-1/2, so float32 rounding stays at
the level of the direct sum (Lavin & Gray 2016, "Fast Algorithms for Convolutional
Neural Networks"). `cvflow.ops.conv` runs the chunk loop and the products.
"""
from __future__ import annotations

import numpy as np

from cvflow.arrays import get_xp

# G maps a 3-tap kernel to 4 points; A^T maps 4 products back to 2 outputs.
_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
_AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float32)
_A2 = np.kron(_AT, _AT)  # (4, 16): output 2a+c from product 4k+l


def weights(w):
    """(O, C, 3, 3) conv weight -> (16, C, O) transformed kernels, U[4k+l] = (G w G^T)[k, l].

    vec(G w G^T) = (G kron G) vec(w): one (16, 9) @ (9, O*C) product gives every kernel.
    Computed in float64 and rounded once, in column pieces that keep the float64
    intermediate in cache. The result is a transposed view of a contiguous (16, O, C)
    array (the product's own order; BLAS takes the view as it is)."""
    xp = get_xp(w)
    o, c = w.shape[:2]
    flat = w.reshape(o * c, 9)
    kron = xp.asarray(np.kron(_G, _G))
    u = xp.empty((16, o * c), w.dtype)
    step = 1 << 15
    for a in range(0, o * c, step):
        u[:, a:a + step] = kron @ flat[a:a + step].astype(xp.float64).T
    return u.reshape(16, o, c).transpose(0, 2, 1)


def in_transform(p, r, v):
    """Input tiles -> V.

    p: (2m+2, 2t+2, C) zero-padded input rows (tile (y, x) covers rows 2y..2y+3 and
    columns 2x..2x+3); r: (4, m, 2t+2, C) scratch; v: (16, m, t, C) result, V[4k+l].
    B^T rows: d0-d2, d1+d2, d2-d1, d1-d3 (applied to rows, then to columns).
    """
    xp = get_xp(p)
    m, t = v.shape[1], v.shape[2]
    rows = [p[q:q + 2 * m:2] for q in range(4)]
    _bt(xp, rows, r)
    for k in range(4):
        cols = [r[k][:, q:q + 2 * t:2] for q in range(4)]
        _bt(xp, cols, v[4 * k:4 * k + 4])


def _bt(xp, d, out):
    xp.subtract(d[0], d[2], out=out[0])
    xp.add(d[1], d[2], out=out[1])
    xp.subtract(d[2], d[1], out=out[2])
    xp.subtract(d[1], d[3], out=out[3])


def out_transform(prod, y):
    """Products -> the four output phases.

    prod: (16, m, t, O) tile products (a bias, if any, already added to prod[5], which
    reaches all four outputs with weight 1); y: (4, m, t, O) result, y[2a+c] holding the
    outputs at rows 2*tile+a, columns 2*tile+c.
    """
    xp = get_xp(prod)
    xp.matmul(xp.asarray(_A2), prod.reshape(16, -1), out=y.reshape(4, -1))


def scatter(y, out):
    """Phases (4, m, t, O) into out, a (rows, cols, O) view with rows <= 2m, cols <= 2t
    (odd sizes crop the last tiles)."""
    rows, cols = out.shape[0], out.shape[1]
    for a in range(2):
        for c in range(2):
            out[a::2, c::2] = y[2 * a + c, :(rows - a + 1) // 2, :(cols - c + 1) // 2]
