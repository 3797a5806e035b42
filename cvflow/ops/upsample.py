"""Resizing of NHWC maps: bilinear (both corner conventions) and nearest.

Bilinear resizing is separable, so it is two small matrix products with
interpolation matrices, exactly PyTorch's ``F.interpolate`` arithmetic.
"""
from __future__ import annotations

import numpy as np

from cvflow.arrays import get_xp
from cvflow.ops import parallel

try:  # a runtime dependency; bench/gpu_check.sh may run where only NumPy and CuPy are
    import cv2
except ImportError:
    cv2 = None


def interp_matrix(n_in, n_out, align_corners, scale=None):
    """(n_out, n_in) float32 matrix of bilinear weights.

    `scale` is PyTorch's input/output ratio when a scale factor was given
    (defaults to n_in / n_out, identical for integer factors).
    """
    dst = np.arange(n_out, dtype=np.float64)
    if align_corners:
        src = dst * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros(n_out)
    else:
        ratio = n_in / n_out if scale is None else scale
        src = np.maximum((dst + 0.5) * ratio - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = (src - i0).astype(np.float32)
    m = np.zeros((n_out, n_in), dtype=np.float32)
    np.add.at(m, (np.arange(n_out), i0), 1 - lam)
    np.add.at(m, (np.arange(n_out), i1), lam)
    return m


def resize_bilinear(x, out_h, out_w, align_corners):
    """Bilinear resize of x (N, H, W, C) to (N, out_h, out_w, C), same dtype.

    Rows: (out_h, H) @ (H, W*C) per image. Columns: with C moved before W, one product
    (N*out_h*C, W) @ (W, out_w) rather than N*out_h products of C columns each (RAFT's
    8x flow upsampling: 440 products of two columns took 19 ms, and woke BLAS's threads,
    which then spin). Products go to `parallel.matmul` (shared among the pool's threads
    at one BLAS thread each), the transposing copies in pieces."""
    xp = get_xp(x)
    n, h, w, c = x.shape
    m = n * out_h
    mh = xp.asarray(interp_matrix(h, out_h, align_corners))
    mwt = xp.asarray(interp_matrix(w, out_w, align_corners)).T     # (W, out_w) view
    rows = xp.empty((n, out_h, w * c), x.dtype)
    parallel.matmul(mh, x.reshape(n, h, w * c), out=rows)
    rows_wc, rows_cw = rows.reshape(m, w, c), xp.empty((m, c, w), x.dtype)   # C before W
    parallel.map_spans(lambda a, b: _transposed(rows_wc[a:b], rows_cw[a:b]), m, w * c, xp)
    cols = xp.empty((m, c, out_w), x.dtype)
    parallel.matmul(rows_cw.reshape(m * c, w), mwt, out=cols.reshape(m * c, out_w))
    out = xp.empty((n, out_h, out_w, c), x.dtype)
    flat = out.reshape(m, out_w, c)
    parallel.map_spans(lambda a, b: _transposed(cols[a:b], flat[a:b]), m, out_w * c, xp)
    return out


def _transposed(src, dst):
    """dst[i] = src[i].T for (M, A, B) src and (M, B, A) C-contiguous dst. NumPy float32
    with A of 2-4: cv2.merge (A planes into A-channel pixels), ~9x NumPy's strided copy."""
    if (cv2 is not None and isinstance(dst, np.ndarray) and dst.dtype == np.float32
            and 2 <= src.shape[1] <= 4 and src.strides[2] == src.itemsize):
        cv2.merge([src[:, k] for k in range(src.shape[1])], dst=dst)
    else:
        dst[...] = src.transpose(0, 2, 1)


def upsample_nearest(x, factor):
    """Nearest-neighbour upsampling by an integer factor, (N, H, W, C) -> (N, fH, fW, C)."""
    xp = get_xp(x)
    return xp.repeat(xp.repeat(x, factor, axis=1), factor, axis=2)


def convex_upsample(flow, mask, factor):
    """Convex upsampling (RAFT): each fine pixel is a softmax-weighted mix of the 3x3
    coarse neighbours of its coarse pixel, with values scaled by `factor`.

    flow: (N, H, W, C) coarse map (C = 2 for flow, in coarse pixels).
    mask: (N, H, W, 9 * factor**2) logits, channel k * factor**2 + i * factor + j for
    neighbour k (3x3, row-major) and sub-pixel (i, j); neighbours outside are 0.
    Returns (N, factor*H, factor*W, C).
    """
    xp = get_xp(flow)
    n, h, w, c = flow.shape
    f2 = factor * factor
    padded = xp.pad(flow * flow.dtype.type(factor), ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = xp.empty((n, h * factor, w * factor, c), dtype=flow.dtype)

    def rows(a, b):  # coarse rows a .. b -> fine rows a*factor .. b*factor
        m = mask[:, a:b].reshape(n, b - a, w, 9, f2)
        m = xp.exp(m - m.max(axis=3, keepdims=True))
        m /= m.sum(axis=3, keepdims=True)
        neigh = xp.stack([padded[:, a + ky:b + ky, kx:kx + w] for ky in range(3) for kx in range(3)], axis=3)
        up = xp.matmul(m.transpose(0, 1, 2, 4, 3), neigh)       # (N, b-a, W, f*f, C)
        up = up.reshape(n, b - a, w, factor, factor, c).transpose(0, 1, 3, 2, 4, 5)
        out[:, a * factor:b * factor] = up.reshape(n, (b - a) * factor, w * factor, c)

    # rows are independent: shared among threads (its ~n*h*w tiny products each go to BLAS
    # at one thread; left to BLAS's own threads, two threads ran it 1.7x slower than one)
    parallel.map_spans(rows, h, n * w * 9 * f2, xp, blas_one=True)
    return out
