"""2-D convolution and transposed convolution on NHWC activations.

Weights keep PyTorch's layout: conv (O, I/groups, kh, kw), transposed conv
(I, O, kh, kw). Convolutions lower to one matrix product per output chunk
(im2col over a strided view), which keeps the work inside BLAS.
"""
from __future__ import annotations

from cvflow.backend import get_xp

# Rows of the im2col buffer per chunk: bounds temporary memory on large frames.
_COL_BYTES = 64 << 20


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def weight_matrix(w):
    """(O, I, kh, kw) conv weight -> (kh*kw*I, O) matrix matching NHWC im2col."""
    xp = get_xp(w)
    o = w.shape[0]
    return xp.ascontiguousarray(w.transpose(2, 3, 1, 0).reshape(-1, o))


def _matrix(p):
    # Cached on the layer's dict: derived once per weight, never recomputed per call.
    m = p.get("_mat")
    if m is None:
        m = p["_mat"] = weight_matrix(p["weight"])
    return m


def conv2d(x, p, stride=1, padding=0, dilation=1, groups=1):
    """Convolution (cross-correlation, as PyTorch) with zero padding.

    x: (N, H, W, C) float32. p: {"weight": (O, C/groups, kh, kw), "bias": (O,) optional}.
    Returns (N, Ho, Wo, O) with Ho = (H + 2*ph - dh*(kh-1) - 1) // sh + 1.
    """
    xp = get_xp(x)
    w = p["weight"]
    o, ci, kh, kw = w.shape
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    dh, dw = _pair(dilation)
    n, h, wd, c = x.shape
    if groups != 1:
        return _grouped(x, p, (sh, sw), (ph, pw), (dh, dw), groups)
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    mat = _matrix(p)
    bias = p.get("bias")
    if kh == kw == 1 and sh == sw == 1 and ph == pw == 0:
        out = x.reshape(-1, c) @ mat
        if bias is not None:
            out += bias
        return out.reshape(n, h, wd, o)
    if ph or pw:
        x = xp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    if sh == sw == dh == dw == 1 and 4 * o <= c:
        return _conv_narrow(x, p, ho, wo)
    out = xp.empty((n, ho, wo, o), dtype=x.dtype)
    s = x.strides
    rows = max(1, _COL_BYTES // max(1, wo * kh * kw * c * x.itemsize))
    for b in range(n):
        for r0 in range(0, ho, rows):
            r1 = min(ho, r0 + rows)
            view = xp.lib.stride_tricks.as_strided(
                x[b, r0 * sh:],
                shape=(r1 - r0, wo, kh, kw, c),
                strides=(s[1] * sh, s[2] * sw, s[1] * dh, s[2] * dw, s[3]),
            )
            cols = view.reshape((r1 - r0) * wo, kh * kw * c)
            res = out[b, r0:r1].reshape(-1, o)
            xp.matmul(cols, mat, out=res)
            if bias is not None:
                res += bias
    return out


def _conv_narrow(x, p, ho, wo):
    """Stride-1 conv of an already padded x with few outputs (O <= C/4, e.g. flow heads).

    One product x @ W gives every tap's contribution (kh*kw*O columns, far smaller than
    an im2col of kh*kw*C); the taps are then summed at their shifts.
    """
    xp = get_xp(x)
    w, bias = p["weight"], p.get("bias")
    o, c, kh, kw = w.shape
    n, _, wp, _ = x.shape
    tmat = p.get("_omat")
    if tmat is None:  # (C, kh*kw*O)
        tmat = p["_omat"] = xp.ascontiguousarray(w.transpose(1, 2, 3, 0).reshape(c, -1))
    out = xp.empty((n, ho, wo, o), dtype=x.dtype)
    rows = max(1, _COL_BYTES // max(1, wp * kh * kw * o * x.itemsize))
    for r0 in range(0, ho, rows):
        r1 = min(ho, r0 + rows)
        taps = (x[:, r0:r1 + kh - 1].reshape(-1, c) @ tmat).reshape(n, r1 - r0 + kh - 1, wp, kh, kw, o)
        acc = out[:, r0:r1]
        acc[...] = taps[:, 0:r1 - r0, 0:wo, 0, 0]
        for i in range(kh):
            for j in range(kw):
                if i or j:
                    acc += taps[:, i:i + r1 - r0, j:j + wo, i, j]
    if bias is not None:
        out += bias
    return out


def _grouped(x, p, stride, padding, dilation, groups):
    xp = get_xp(x)
    w, bias = p["weight"], p.get("bias")
    og, cg = w.shape[0] // groups, x.shape[-1] // groups
    parts = []
    for g in range(groups):
        pg = {"weight": w[g * og:(g + 1) * og]}
        if bias is not None:
            pg["bias"] = bias[g * og:(g + 1) * og]
        xg = xp.ascontiguousarray(x[..., g * cg:(g + 1) * cg])
        parts.append(conv2d(xg, pg, stride, padding, dilation))
    return xp.concatenate(parts, axis=-1)


def conv_transpose2d(x, p, stride=1, padding=0, output_padding=0):
    """Transposed convolution (PyTorch ConvTranspose2d, groups=1, dilation=1).

    x: (N, H, W, I). p: {"weight": (I, O, kh, kw), "bias": (O,) optional}.
    Returns (N, (H-1)*sh - 2*ph + kh + oph, ..., O).
    """
    xp = get_xp(x)
    w = p["weight"]
    ci, o, kh, kw = w.shape
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    oph, opw = _pair(output_padding)
    n, h, wd, _ = x.shape
    tmat = p.get("_tmat")
    if tmat is None:  # (I, kh*kw*O): one product gives every tap's contribution
        tmat = p["_tmat"] = xp.ascontiguousarray(w.transpose(0, 2, 3, 1).reshape(ci, -1))
    cols = (x.reshape(-1, ci) @ tmat).reshape(n, h, wd, kh, kw, o)
    full = xp.zeros((n, (h - 1) * sh + kh + oph, (wd - 1) * sw + kw + opw, o), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            full[:, i:i + (h - 1) * sh + 1:sh, j:j + (wd - 1) * sw + 1:sw] += cols[:, :, :, i, j]
    ho = (h - 1) * sh - 2 * ph + kh + oph
    wo = (wd - 1) * sw - 2 * pw + kw + opw
    out = full[:, ph:ph + ho, pw:pw + wo]
    if p.get("bias") is not None:
        out = out + p["bias"]
    return xp.ascontiguousarray(out)
