"""RAFT's GRU gate arithmetic on the CUDA backend (kernels/gru.cu): the pointwise passes
of one cell step in two kernels, same operations and order as cvflow/ops/gru.py's `_step`.
"""
from __future__ import annotations

from cvflow.backends.cuda.executor import contiguous, i32, launch_1d
from cvflow.errors import InputError


def gru_step(ex, h, g, c, hzr, conv_q):
    """New state (N, H, W, Ch) from state h (N, H, W, Ch), g (P, 3Ch) the input's share of
    z, r, q, c (P or 1, 3Ch) the constant share with biases, hzr (P, 2Ch) the state's
    halved z, r share; conv_q(r * h) -> (P, Ch) the state's q share (a convolution)."""
    h = contiguous(ex, h)
    ch = h.shape[-1]
    p = h.size // max(1, ch)
    g, c, hzr = contiguous(ex, g), contiguous(ex, c), contiguous(ex, hzr)
    if g.shape != (p, 3 * ch) or hzr.shape != (p, 2 * ch) or c.shape[-1] != 3 * ch or c.shape[0] not in (1, p):
        raise InputError(f"GRU step: g {tuple(g.shape)}, c {tuple(c.shape)}, hzr {tuple(hzr.shape)} do not fit "
                         f"state {tuple(h.shape)}")
    zr, rh = ex.empty((p, 2 * ch)), ex.empty(h.shape)
    launch_1d(ex, "gru:gru_gates", p * 2 * ch, g, c, hzr, h, zr, rh, i32(p), i32(ch), i32(c.shape[0]))
    q = contiguous(ex, conv_q(rh))
    out = ex.empty(h.shape)
    launch_1d(ex, "gru:gru_blend", p * ch, q, g, c, zr, h, out, i32(p), i32(ch), i32(c.shape[0]))
    return out
