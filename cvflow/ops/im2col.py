"""Zero-padded im2col copies for the convolution paths of `cvflow.ops.conv` (NHWC).

Padding is written into the copy, never materialised as a padded input; each copy is
a few NumPy calls (whole runs of kw*C contiguous values where the taps are inside).
"""
from __future__ import annotations

from cvflow.arrays import get_xp


def span(n_out, n_in, step, off):
    """[a, b): the outputs o < n_out whose input o*step + off lies in [0, n_in)."""
    a = max(0, -(off // step))
    b = min(n_out, (n_in - 1 - off) // step + 1) if n_in > off else 0
    return a, max(a, b)


def fill(dst, src, y0, sh, dh, sw, dw, pw):
    """Zero-padded im2col: dst[t, c, i, j] = src[y0 + t*sh + i*dh, c*sw + j*dw - pw]
    (zero where outside src). dst: (m, wo, kh, kw, C) view; src: (H, W, C)."""
    xp = get_xp(src)
    m, wo, kh, kw, c = dst.shape
    h, w = src.shape[:2]
    for i in range(kh):
        a, b = span(m, h, sh, y0 + i * dh)
        dst[:a, :, i] = 0
        dst[b:, :, i] = 0
        if b == a:
            continue
        ys = y0 + i * dh + a * sh
        rows = src[ys:ys + (b - a - 1) * sh + 1:sh]
        out = dst[a:b, :, i]
        # Columns whose kw taps are all inside: one copy of kw*C contiguous values each.
        ca, cb = span(wo, w - (kw - 1) * dw, sw, -pw) if dw == 1 else (0, 0)
        if cb > ca:
            first = rows[:, ca * sw - pw:]
            view = xp.lib.stride_tricks.as_strided(
                first, shape=(b - a, cb - ca, kw * c),
                strides=(rows.strides[0], sw * src.strides[1], src.strides[2]))
            out[:, ca:cb].reshape(b - a, cb - ca, kw * c)[...] = view
        for j in range(kw):  # the rest, tap by tap (all of it when dilated)
            ja, jb = span(wo, w, sw, j * dw - pw)
            for lo, hi in ((0, ca), (cb, wo)) if cb > ca else ((0, wo),):
                lo_in = min(hi, max(lo, ja))
                hi_in = max(lo_in, min(hi, jb))
                out[:, lo:lo_in, j] = 0
                out[:, hi_in:hi, j] = 0
                if hi_in > lo_in:
                    x0 = lo_in * sw + j * dw - pw
                    out[:, lo_in:hi_in, j] = rows[:, x0:x0 + (hi_in - lo_in - 1) * sw + 1:sw]
