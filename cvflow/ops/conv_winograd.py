"""Winograd F(4x4, 3x3): the transforms of a stride-1 3x3 convolution.

A 4x4 block of outputs needs a 6x6 input tile d. With V = B^T d B (per channel) and
U = G w G^T (per input/output channel pair), the block is A^T [sum_c V * U] A: 36
products per block, one matrix product per tile position (36 of them), instead of 144
multiply-adds (2.25 per output; F(2x2, 3x3) takes 4). Interpolation points 0, +-1, +-2
and infinity (Lavin & Gray 2016, "Fast Algorithms for Convolutional Neural Networks"):
float32 rounding ~1e-5 of the output's scale, ~20x that of F(2x2, 3x3) and far below
what RAFT's golden and torchvision comparisons resolve.

The transforms are applied as single matrix products with the Kronecker matrices (36 x
36 on the gathered input tiles, 16 x 36 on the products), so BLAS runs them: as NumPy
passes they would take a dozen per element. `cvflow.ops.conv` runs the chunk loop.
"""
from __future__ import annotations

import numpy as np

from cvflow.arrays import get_xp

_G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
               [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]])
_BT = np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], np.float32)
_AT = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
               np.float32)
B = np.kron(_BT, _BT)  # (36, 36): V[6k+l] from tile value 6i+j (small integers: exact)
A = np.kron(_AT, _AT)  # (16, 36): output 4a+c from product 6k+l (exact)


def weights(w):
    """(O, C, 3, 3) conv weight -> (36, C, O) transformed kernels, U[6k+l] = (G w G^T)[k, l].

    vec(G w G^T) = (G kron G) vec(w): one (36, 9) @ (9, O*C) product gives every kernel.
    Computed in float64 and rounded once, in column pieces that keep the float64
    intermediate in cache. The result is a transposed view of a contiguous (36, O, C)
    array (the product's own order; BLAS takes the view as it is)."""
    xp = get_xp(w)
    o, c = w.shape[:2]
    flat = w.reshape(o * c, 9)
    kron = xp.asarray(np.kron(_G, _G))
    u = xp.empty((36, o * c), w.dtype)
    step = 1 << 15
    for a in range(0, o * c, step):
        u[:, a:a + step] = kron @ flat[a:a + step].astype(xp.float64).T
    return u.reshape(36, o, c).transpose(0, 2, 1)


def gather(p, d):
    """Input tiles: d[6i+j, y, x] = p[4y+i, 4x+j]. p: (4m+2, 4t+2, C) zero-padded input
    rows (tile (y, x) covers rows 4y..4y+5, columns 4x..4x+5); d: (36, m, t, C)."""
    m, t = d.shape[1], d.shape[2]
    for i in range(6):
        for j in range(6):
            d[6 * i + j] = p[i:i + 4 * m:4, j:j + 4 * t:4]


def scatter(y, out):
    """Output phases (16, m, t, O), y[4a+c] at rows 4*tile+a, columns 4*tile+c, into out,
    a (rows, cols, O) view with rows <= 4m, cols <= 4t (odd sizes crop the last tiles)."""
    rows, cols = out.shape[0], out.shape[1]
    for a in range(4):
        for c in range(4):
            out[a::4, c::4] = y[4 * a + c, :(rows - a + 3) // 4, :(cols - c + 3) // 4]
