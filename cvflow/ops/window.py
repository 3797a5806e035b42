"""Window partition/merge and shifted-window attention (Swin-style), NHWC.

A map is cut into splits x splits equal windows; windows become extra batch
entries ordered (batch, window row, window column), as GMFlow's split_feature.
"""
from __future__ import annotations

import numpy as np

from cvflow.arrays import get_xp
from cvflow.ops.attention import attention

# Added to scores between tokens from different regions of a shifted window (GMFlow's value).
MASK_VALUE = -100.0


def window_partition(x, splits):
    """(N, H, W, C) -> (N*s*s, H/s, W/s, C); H and W must divide by s."""
    n, h, w, c = x.shape
    hh, ww = h // splits, w // splits
    t = x.reshape(n, splits, hh, splits, ww, c).transpose(0, 1, 3, 2, 4, 5)
    return t.reshape(n * splits * splits, hh, ww, c)


def window_merge(x, splits):
    """Inverse of window_partition: (N*s*s, h, w, C) -> (N, s*h, s*w, C)."""
    b, hh, ww, c = x.shape
    n = b // (splits * splits)
    t = x.reshape(n, splits, splits, hh, ww, c).transpose(0, 1, 3, 2, 4, 5)
    return t.reshape(n, splits * hh, splits * ww, c)


def shift_sizes(h, w, splits):
    """Half a window in each direction (floor), the shift of the odd layers."""
    return (h // splits) // 2, (w // splits) // 2


def shifted_window_mask(h, w, splits, xp=np):
    """(s*s, L, L) additive mask, L = (H/s)*(W/s), for attention on a map rolled by -shift.

    After the roll, a window at the bottom/right edge holds pixels from up to four
    regions of the unrolled map that were not neighbours; pairs from different
    regions get MASK_VALUE, pairs from one region 0.
    """
    wh, ww = h // splits, w // splits
    sh, sw = shift_sizes(h, w, splits)
    label = np.zeros((h, w), dtype=np.float32)
    rows = (slice(0, h - wh), slice(h - wh, h - sh), slice(h - sh, h))
    cols = (slice(0, w - ww), slice(w - ww, w - sw), slice(w - sw, w))
    region = 0
    for r in rows:
        for c in cols:
            label[r, c] = region
            region += 1
    win = window_partition(label[None, :, :, None], splits).reshape(splits * splits, wh * ww)
    differ = win[:, None, :] != win[:, :, None]
    return xp.asarray(np.where(differ, np.float32(MASK_VALUE), np.float32(0.0)))


def window_attention(q, k, v, splits, shift=False, mask=None):
    """Attention inside each of splits x splits windows, optionally shifted by half a window.

    q, k, v: (N, H, W, C). mask: shifted_window_mask(H, W, splits) when shift is True
    (pass it to compute it once per map size). Returns (N, H, W, C).
    """
    xp = get_xp(q)
    n, h, w, c = q.shape
    if shift:
        sh, sw = shift_sizes(h, w, splits)
        q, k, v = (xp.roll(t, (-sh, -sw), axis=(1, 2)) for t in (q, k, v))
        if mask is None:
            mask = shifted_window_mask(h, w, splits, xp)
    hh, ww = h // splits, w // splits
    nw = splits * splits
    qw, kw, vw = (window_partition(t, splits).reshape(n, nw, hh * ww, c) for t in (q, k, v))
    out = attention(qw, kw, vw, bias=mask if shift else None)
    out = window_merge(out.reshape(n * nw, hh, ww, c), splits)
    if shift:
        out = xp.roll(out, (sh, sw), axis=(1, 2))
    return out
