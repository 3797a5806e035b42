"""Attention and GMFlow's matching on the CUDA backend: cuBLAS products for the scores
and the weighted values, kernels for the rest (kernels/softmax.cu, matching.cu,
local_attention.cu, window.cu).

Same results as cvflow/ops/attention.py, ops/window.py and ops/matching.py within
float32 rounding (the softmax is normalised before the value product here, after it
there). Tiling is the device's: one block of scores for all problems and rows while it
stays under `SCORE_BYTES` (GMFlow at 448x1024: one block per attention), where the CPU
takes cache-sized ones. Arrays: float32 on the executor, contiguous.
"""
from __future__ import annotations

import math

from cvflow.backends.cuda.executor import contiguous, f32, i32, launch_1d
from cvflow.errors import InputError

# Most bytes of one block of scores: large blocks keep the launches few, and the bound
# keeps 4K frames' global matching (0.5 G pixel pairs) from holding it all at once.
SCORE_BYTES = 1 << 30


def _row_block(problems, n_q, n_k):
    """Query rows per block: every problem's scores at once, in bands of rows of at most
    SCORE_BYTES (all rows when they fit)."""
    return max(1, min(n_q, SCORE_BYTES // max(1, problems * n_k * 4)))


def attention(ex, q, k, v, bias=None, scale=None):
    """softmax(q @ k^T * scale + bias) @ v. q: (..., L, C), k: (..., S, C), v: (..., S, D);
    bias: None or (P, L, S) with the problems (product of the leading axes) reading bias
    problem index % P (a shifted-window mask, the same for every image). Returns (..., L, D)."""
    q, k, v = contiguous(ex, q), contiguous(ex, k), contiguous(ex, v)
    *lead, n_q, c = q.shape
    n_k, d = k.shape[-2], v.shape[-1]
    batch = math.prod(lead)
    inv = f32(1.0 / math.sqrt(c) if scale is None else scale)
    qb = q.reshape(batch, n_q, c)
    kt = k.reshape(batch, n_k, c).swapaxes(-1, -2)
    vb = v.reshape(batch, n_k, d)
    if bias is not None:
        bias = contiguous(ex, bias)
        if bias.ndim != 3 or tuple(bias.shape[1:]) != (n_q, n_k) or batch % bias.shape[0]:
            raise InputError(f"bias must be (P, {n_q}, {n_k}) with P dividing {batch}, got {tuple(bias.shape)}")
    rows = _row_block(batch, n_q, n_k)
    out = ex.empty((batch, n_q, d))
    for r0 in range(0, n_q, rows):
        r1 = min(n_q, r0 + rows)
        s = ex.matmul(qb if (r0, r1) == (0, n_q) else qb[:, r0:r1], kt)
        launch_1d(ex, "softmax:softmax_rows", batch * (r1 - r0), s, s if bias is None else bias,
                  i32(batch * (r1 - r0)), i32(n_k), inv, i32(bias is not None), i32(r1 - r0), i32(n_q),
                  i32(1 if bias is None else bias.shape[0]), i32(r0))
        ex.matmul(s, vb, out=out if (r0, r1) == (0, n_q) else out[:, r0:r1])
    return out.reshape(*lead, n_q, d)


def window_partition(ex, x, splits, sh=0, sw=0):
    """(N, H, W, C) rolled by (-sh, -sw) -> (N*s*s, H/s * W/s, C) windows."""
    x = contiguous(ex, x)
    n, h, w, c = x.shape
    out = ex.empty((n * splits * splits, (h // splits) * (w // splits), c))
    launch_1d(ex, "window:window_partition", x.size, x, out, i32(n), i32(h), i32(w), i32(c), i32(splits),
              i32(sh), i32(sw))
    return out


def window_merge(ex, win, shape, splits, sh=0, sw=0):
    """Inverse of `window_partition`: windows -> (N, H, W, C) = `shape`, rolled back."""
    n, h, w, c = shape
    out = ex.empty(shape)
    launch_1d(ex, "window:window_merge", out.size, contiguous(ex, win), out, i32(n), i32(h), i32(w), i32(c),
              i32(splits), i32(sh), i32(sw))
    return out


def window_attention(ex, q, k, v, splits, shift, mask):
    """Attention inside each of splits x splits windows of (N, H, W, C) maps, shifted by
    (shift_sizes) with the additive `mask` (s*s, L, L) when `shift`. Returns (N, H, W, C)."""
    from cvflow.ops.window import shift_sizes

    n, h, w, c = q.shape
    if h % splits or w % splits:
        raise InputError(f"window attention needs H and W multiples of splits={splits}, got {h}x{w}")
    sh, sw = shift_sizes(h, w, splits) if shift else (0, 0)
    qw, kw, vw = (window_partition(ex, t, splits, sh, sw) for t in (q, k, v))
    out = attention(ex, qw, kw, vw, bias=mask if shift else None)
    return window_merge(ex, out, (n, h, w, v.shape[-1]), splits, sh, sw)


def global_matching(ex, f0, f1):
    """Flow (N, H, W, 2): per pixel of f0, the softmax over all pixels of f1 of
    <f0, f1> / sqrt(C), its expected (x, y) minus the pixel's (one kernel, no grid)."""
    f0, f1 = contiguous(ex, f0), contiguous(ex, f1)
    n, h, w, c = f0.shape
    hw = h * w
    q = f0.reshape(n, hw, c)
    kt = f1.reshape(n, hw, c).swapaxes(-1, -2)
    flow = ex.empty((n, h, w, 2))
    rows = _row_block(n, hw, hw)
    inv = f32(1.0 / math.sqrt(c))
    for r0 in range(0, hw, rows):
        r1 = min(hw, r0 + rows)
        s = ex.matmul(q if (r0, r1) == (0, hw) else q[:, r0:r1], kt)
        launch_1d(ex, "matching:global_match_flow", n * (r1 - r0), s, flow, i32(n * (r1 - r0)), i32(hw), i32(w),
                  inv, i32(r1 - r0), i32(r0))
    return flow


def local_matching(ex, corr, radius, channels):
    """Flow (N, H, W, 2) from `corr` (N, H, W, (2r+1)^2), patch_correlation's channel
    means of `channels`-channel features: softmax over the window positions inside the
    map, expected offset."""
    n, h, w, _ = corr.shape
    flow = ex.empty((n, h, w, 2))
    launch_1d(ex, "matching:local_match_flow", n * h * w, contiguous(ex, corr), flow, i32(n), i32(h), i32(w),
              i32(radius), f32(math.sqrt(channels)))
    return flow


def local_attention(ex, corr, v, radius, channels):
    """(N, H, W, D): softmax over the (2r+1)^2 neighbourhood scores `corr` (channel means
    of `channels`-channel q.k, zero outside) of the zero-padded neighbours of v."""
    v = contiguous(ex, v)
    n, h, w, d = v.shape
    out = ex.empty((n, h, w, d))
    launch_1d(ex, "local_attention:local_attention", out.size, contiguous(ex, corr), v, out, i32(n), i32(h),
              i32(w), i32(d), i32(radius), f32(math.sqrt(channels)))
    return out
