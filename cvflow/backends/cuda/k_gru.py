"""RAFT's GRU gate arithmetic on the CUDA backend (kernels/gru.cu): the pointwise passes
of one cell step in two kernels, same operations and order as cvflow/ops/gru.py's `_step`.

Storage: float32, or half (`k_dtype`): the state h's storage dtype is the step's; g, c,
hzr and conv_q's output are used in it (converted when they differ), r * h and the new
state are written in it. The gates z, r stay a float32 buffer and the state update is
computed in float32 (issue 20: the GRU state update accumulates in FP32).
"""
from __future__ import annotations

from cvflow.backends.cuda import k_glue
from cvflow.backends.cuda.executor import contiguous, i32, launch_1d
from cvflow.backends.cuda.k_dtype import kernel, like, storage
from cvflow.errors import InputError


def gru_step(ex, h, g, c, hzr, conv_q):
    """New state (N, H, W, Ch) from state h (N, H, W, Ch), g (P, 3Ch) the input's share of
    z, r, q, c (P or 1, 3Ch) the constant share with biases, hzr (P, 2Ch) the state's
    halved z, r share (any view with unit channel stride), or None when g already holds
    it; conv_q(r * h) -> (P, Ch) the state's q share (a convolution)."""
    h = contiguous(ex, h, storage(h))
    ch = h.shape[-1]
    p = h.size // max(1, ch)
    g, c = (like(ex, contiguous(ex, a, storage(a)), h) for a in (g, c))
    if g.shape != (p, 3 * ch) or c.shape[-1] != 3 * ch or c.shape[0] not in (1, p) or \
            (hzr is not None and tuple(hzr.shape) != (p, 2 * ch)):
        raise InputError(f"GRU step: g {tuple(g.shape)}, c {tuple(c.shape)}, "
                         f"hzr {None if hzr is None else tuple(hzr.shape)} do not fit state {tuple(h.shape)}")
    if hzr is None:
        flat, off, rows = g, 0, 0
    else:
        if hzr.dtype != h.dtype:
            hzr = like(ex, contiguous(ex, hzr, storage(hzr)), h)
        flat, off, strides = k_glue._flat(ex, hzr)
        if strides[-1] != 1:
            raise InputError("GRU step: hzr needs unit channel stride")
        rows = strides[0]
    zr, rh = ex.empty((p, 2 * ch)), ex.empty(h.shape, h.dtype)
    launch_1d(ex, kernel("gru:gru_gates", h), p * 2 * ch, g, c, flat, h, zr, rh, i32(p), i32(ch), i32(c.shape[0]),
              i32(hzr is not None), i32(off), i32(rows))
    q = contiguous(ex, like(ex, conv_q(rh), h), h.dtype)
    out = ex.empty(h.shape, h.dtype)
    launch_1d(ex, kernel("gru:gru_blend", h), p * ch, q, g, c, zr, h, out, i32(p), i32(ch), i32(c.shape[0]))
    return out
