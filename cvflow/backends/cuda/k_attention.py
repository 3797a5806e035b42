"""Attention and GMFlow's matching on the CUDA backend: cuBLAS products for the scores
and the weighted values, kernels for the rest (kernels/softmax.cu, matching.cu,
local_attention.cu, window.cu).

Same results as cvflow/ops/attention.py, ops/window.py and ops/matching.py within
float32 rounding (the softmax is normalised before the value product here, after it
there). Tiling is the device's: one block of scores for all problems and rows while it
stays under `SCORE_BYTES` (GMFlow at 448x1024: one block per attention), where the CPU
takes cache-sized ones. Arrays: contiguous on the executor, float32 or half storage
(`k_dtype`: float16, or uint16 bfloat16 bits). Half inputs give half outputs: q, k, v,
the scores and the probabilities are stored in q's (or f0's, v's) type, products and
softmax computed in float32. What stays float32 in every mode: the attention bias (a
constant mask of 0 and -100) and the matching flows (the models' output and the next
stage's sampling offsets, sub-pixel quantities half storage would coarsen).
"""
from __future__ import annotations

import math

import numpy as np

from cvflow.backends.cuda import k_dtype
from cvflow.backends.cuda.executor import contiguous, f32, i32, launch_1d
from cvflow.errors import InputError

# Most bytes of one block of scores: large blocks keep the launches few, and the bound
# keeps 4K frames' global matching (0.5 G pixel pairs) from holding it all at once.
SCORE_BYTES = 1 << 30


def _row_block(problems, n_q, n_k, itemsize=4):
    """Query rows per block: every problem's scores at once, in bands of rows of at most
    SCORE_BYTES (all rows when they fit)."""
    return max(1, min(n_q, SCORE_BYTES // max(1, problems * n_k * itemsize)))


def _typed(ex, x, like):
    """x contiguous on the executor in the storage dtype of `like`."""
    return k_dtype.like(ex, contiguous(ex, x, k_dtype.storage(x)), like)


def _float32(ex, x):
    """x contiguous float32 on the executor (half storage converted exactly)."""
    return contiguous(ex, k_dtype.to_float(ex, x) if k_dtype.storage(x) != np.float32 else x)


def attention(ex, q, k, v, bias=None, scale=None):
    """softmax(q @ k^T * scale + bias) @ v. q: (..., L, C), k: (..., S, C), v: (..., S, D);
    bias: None or (P, L, S) float32 with the problems (product of the leading axes) reading bias
    problem index % P (a shifted-window mask, the same for every image). Returns (..., L, D)
    in q's storage dtype (k and v are converted to it)."""
    q = contiguous(ex, q, k_dtype.storage(q))
    k, v = _typed(ex, k, q), _typed(ex, v, q)
    *lead, n_q, c = q.shape
    n_k, d = k.shape[-2], v.shape[-1]
    batch = math.prod(lead)
    inv = f32(1.0 / math.sqrt(c) if scale is None else scale)
    qb = q.reshape(batch, n_q, c)
    kt = k.reshape(batch, n_k, c).swapaxes(-1, -2)
    vb = v.reshape(batch, n_k, d)
    if bias is not None:
        bias = _float32(ex, bias)
        if bias.ndim != 3 or tuple(bias.shape[1:]) != (n_q, n_k) or batch % bias.shape[0]:
            raise InputError(f"bias must be (P, {n_q}, {n_k}) with P dividing {batch}, got {tuple(bias.shape)}")
    rows = _row_block(batch, n_q, n_k, q.itemsize)
    out = ex.empty((batch, n_q, d), q.dtype)
    # without a bias the kernel reads none, but its argument is a float32 array all the same
    unused = None if bias is not None or q.dtype == np.float32 else ex.empty((1,))
    for r0 in range(0, n_q, rows):
        r1 = min(n_q, r0 + rows)
        s = ex.matmul(qb if (r0, r1) == (0, n_q) else qb[:, r0:r1], kt)
        b = bias if bias is not None else s if unused is None else unused
        launch_1d(ex, k_dtype.kernel("softmax:softmax_rows", s), batch * (r1 - r0), s, b,
                  i32(batch * (r1 - r0)), i32(n_k), inv, i32(bias is not None), i32(r1 - r0), i32(n_q),
                  i32(1 if bias is None else bias.shape[0]), i32(r0))
        ex.matmul(s, vb, out=out if (r0, r1) == (0, n_q) else out[:, r0:r1])
    return out.reshape(*lead, n_q, d)


def window_partition(ex, x, splits, sh=0, sw=0):
    """(N, H, W, C) rolled by (-sh, -sw) -> (N*s*s, H/s * W/s, C) windows, in x's storage dtype."""
    x = contiguous(ex, x, k_dtype.storage(x))
    n, h, w, c = x.shape
    out = ex.empty((n * splits * splits, (h // splits) * (w // splits), c), x.dtype)
    launch_1d(ex, k_dtype.kernel("window:window_partition", x), x.size, x, out, i32(n), i32(h), i32(w), i32(c),
              i32(splits), i32(sh), i32(sw))
    return out


def window_merge(ex, win, shape, splits, sh=0, sw=0):
    """Inverse of `window_partition`: windows -> (N, H, W, C) = `shape`, rolled back, in
    win's storage dtype."""
    n, h, w, c = shape
    win = contiguous(ex, win, k_dtype.storage(win))
    out = ex.empty(shape, win.dtype)
    launch_1d(ex, k_dtype.kernel("window:window_merge", win), out.size, win, out, i32(n), i32(h), i32(w), i32(c),
              i32(splits), i32(sh), i32(sw))
    return out


def window_attention(ex, q, k, v, splits, shift, mask):
    """Attention inside each of splits x splits windows of (N, H, W, C) maps, shifted by
    (shift_sizes) with the additive float32 `mask` (s*s, L, L) when `shift`. Returns
    (N, H, W, C) in q's storage dtype."""
    from cvflow.ops.window import shift_sizes

    n, h, w, c = q.shape
    if h % splits or w % splits:
        raise InputError(f"window attention needs H and W multiples of splits={splits}, got {h}x{w}")
    sh, sw = shift_sizes(h, w, splits) if shift else (0, 0)
    qw, kw, vw = (window_partition(ex, t, splits, sh, sw) for t in (q, k, v))
    out = attention(ex, qw, kw, vw, bias=mask if shift else None)
    return window_merge(ex, out, (n, h, w, v.shape[-1]), splits, sh, sw)


def global_matching(ex, f0, f1):
    """Flow (N, H, W, 2) float32: per pixel of f0, the softmax over all pixels of f1 of
    <f0, f1> / sqrt(C), its expected (x, y) minus the pixel's (one kernel, no grid). The
    scores are stored in f0's storage dtype (f1 is converted to it)."""
    f0 = contiguous(ex, f0, k_dtype.storage(f0))
    f1 = _typed(ex, f1, f0)
    n, h, w, c = f0.shape
    hw = h * w
    q = f0.reshape(n, hw, c)
    kt = f1.reshape(n, hw, c).swapaxes(-1, -2)
    flow = ex.empty((n, h, w, 2))
    rows = _row_block(n, hw, hw, f0.itemsize)
    inv = f32(1.0 / math.sqrt(c))
    for r0 in range(0, hw, rows):
        r1 = min(hw, r0 + rows)
        s = ex.matmul(q if (r0, r1) == (0, hw) else q[:, r0:r1], kt)
        launch_1d(ex, k_dtype.kernel("matching:global_match_flow", s), n * (r1 - r0), s, flow, i32(n * (r1 - r0)),
                  i32(hw), i32(w), inv, i32(r1 - r0), i32(r0))
    return flow


def local_matching(ex, corr, radius, channels):
    """Flow (N, H, W, 2) float32 from `corr` (N, H, W, (2r+1)^2, float32 or half storage),
    patch_correlation's channel means of `channels`-channel features: softmax over the
    window positions inside the map, expected offset."""
    corr = contiguous(ex, corr, k_dtype.storage(corr))
    n, h, w, _ = corr.shape
    flow = ex.empty((n, h, w, 2))
    launch_1d(ex, k_dtype.kernel("matching:local_match_flow", corr), n * h * w, corr, flow, i32(n), i32(h),
              i32(w), i32(radius), f32(math.sqrt(channels)))
    return flow


def local_attention(ex, corr, v, radius, channels):
    """(N, H, W, D) in v's storage dtype: softmax over the (2r+1)^2 neighbourhood scores
    `corr` (channel means of `channels`-channel q.k, zero outside; converted to v's type)
    of the zero-padded neighbours of v."""
    v = contiguous(ex, v, k_dtype.storage(v))
    corr = _typed(ex, corr, v)
    n, h, w, d = v.shape
    out = ex.empty((n, h, w, d), v.dtype)
    launch_1d(ex, k_dtype.kernel("local_attention:local_attention", v), out.size, corr, v, out, i32(n), i32(h),
              i32(w), i32(d), i32(radius), f32(math.sqrt(channels)))
    return out
