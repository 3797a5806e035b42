"""2-D sine positional encoding (DETR's PositionEmbeddingSine, normalised)."""
from __future__ import annotations

import math

import numpy as np

from cvflow.arrays import get_xp


def sine_position(h, w, channels, temperature=10000.0, xp=np):
    """(H, W, channels) float32: first channels/2 encode the row, the rest the column.

    Positions are 1..H (1..W) scaled to (0, 2*pi]; channel pairs (2i, 2i+1) hold
    sin and cos of pos / temperature**(2i / (channels/2)). Float32 throughout,
    as the reference computes it.
    """
    f32 = np.float32
    half = channels // 2
    eps = f32(1e-6)
    scale = f32(2 * math.pi)
    y = np.arange(1, h + 1, dtype=f32) / (f32(h) + eps) * scale
    x = np.arange(1, w + 1, dtype=f32) / (f32(w) + eps) * scale
    dim = np.arange(half, dtype=f32)
    dim_t = np.power(f32(temperature), f32(2) * (dim // 2) / f32(half)).astype(f32)

    def encode(pos):  # (n,) -> (n, half): sin on even channels, cos on odd
        a = pos[:, None] / dim_t
        out = np.empty_like(a)
        out[:, 0::2] = np.sin(a[:, 0::2])
        out[:, 1::2] = np.cos(a[:, 1::2])
        return out

    py, px = encode(y), encode(x)
    pos = np.concatenate([np.broadcast_to(py[:, None], (h, w, half)),
                          np.broadcast_to(px[None, :], (h, w, half))], axis=-1)
    return xp.asarray(pos)


def add_window_position(f0, f1, splits):
    """Add the same encoding to both (N, H, W, C) maps, restarted in each of splits x splits windows."""
    _, h, w, c = f0.shape
    xp = get_xp(f0)
    pos = sine_position(h // splits, w // splits, c, xp=xp)
    pos = xp.tile(pos, (splits, splits, 1))
    return f0 + pos, f1 + pos
