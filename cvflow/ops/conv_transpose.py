"""Transposed 2-D convolution (PyTorch's ConvTranspose2d, groups=1, dilation=1), NHWC.

Weights keep PyTorch's layout (I, O, kh, kw). One matrix product per chunk of input
rows gives every tap's contribution of every input pixel; each tap's block is then
added at its place in the output (strided rows and columns). Few outputs (flow
upsamplers): the taps come out as (O, rows, W) planes, so that the adds run along
image rows.
"""
from __future__ import annotations

from cvflow.arrays import get_xp
from cvflow.ops import arena
from cvflow.ops.conv import _CHUNK_BYTES, _cached, _chunk_rows, _finish, _pair, _scratch
from cvflow.ops.im2col import span as _span

_PLANES_BELOW = 32  # outputs below which taps are added as (O, H, W) planes


def conv_transpose2d(x, p, stride=1, padding=0, output_padding=0, act=None, slope=0.1):
    """Transposed convolution (PyTorch ConvTranspose2d, groups=1, dilation=1).

    x: (N, H, W, I). p: {"weight": (I, O, kh, kw), "bias": (O,) optional}; act, slope
    as in `conv2d`. Returns (N, (H-1)*sh - 2*ph + kh + oph, ..., O).
    """
    xp = get_xp(x)
    ci, o, kh, kw = p["weight"].shape
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    oph, opw = _pair(output_padding)
    n, h, wd, _ = x.shape
    ho = (h - 1) * sh - 2 * ph + kh + oph
    wo = (wd - 1) * sw - 2 * pw + kw + opw
    bias = p.get("bias")
    # Few outputs: taps as (O, rows, W) planes, so that the adds run along image rows.
    planes = o < _PLANES_BELOW
    if planes:  # (kh*kw*O, I) or (I, kh*kw*O)
        tmat = _cached(p, "_tmat_t", lambda w: xp.ascontiguousarray(w.transpose(2, 3, 1, 0).reshape(-1, ci)))
    else:
        tmat = _cached(p, "_tmat", lambda w: xp.ascontiguousarray(w.transpose(0, 2, 3, 1).reshape(ci, -1)))
    out = arena.empty(xp, (n, ho, wo, o), x.dtype)
    rows = _chunk_rows(h, wd * kh * kw * o * x.itemsize, wd, _CHUNK_BYTES)
    buf = _scratch(xp, rows * wd * kh * kw * o, "tconv", x.dtype)
    acc = arena.empty(xp, (o, ho, wo), x.dtype) if planes else None
    for b in range(n):
        if planes:
            acc[...] = 0
        else:
            out[b] = 0 if bias is None else bias
        for r0 in range(0, h, rows):
            m = min(h, r0 + rows) - r0
            xb = x[b, r0:r0 + m].reshape(-1, ci)
            if planes:
                taps = buf[:m * wd * kh * kw * o].reshape(kh, kw, o, m, wd)
                xp.matmul(tmat, xb.T, out=taps.reshape(kh * kw * o, -1))
            else:
                taps = buf[:m * wd * kh * kw * o].reshape(m, wd, kh, kw, o)
                xp.matmul(xb, tmat, out=taps.reshape(m * wd, -1))
            for i in range(kh):
                # input row r0 + t lands on output row (r0 + t)*sh + i - ph
                ta, tb = _span(m, ho, sh, r0 * sh + i - ph)
                y0 = (r0 + ta) * sh + i - ph
                ys = slice(y0, y0 + (tb - ta - 1) * sh + 1, sh)
                for j in range(kw if tb > ta else 0):
                    ca, cb = _span(wd, wo, sw, j - pw)
                    x0 = ca * sw + j - pw
                    xs = slice(x0, x0 + (cb - ca - 1) * sw + 1, sw)
                    if cb > ca and planes:
                        acc[:, ys, xs] += taps[i, j, :, ta:tb, ca:cb]
                    elif cb > ca:
                        out[b, ys, xs] += taps[ta:tb, ca:cb, i, j]
        if planes:
            out[b] = acc.transpose(1, 2, 0)
        _finish(out[b], bias if planes else None, act, slope)
    return out
