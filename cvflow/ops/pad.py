"""Replicate padding to a multiple of a stride, and its inverse."""
from __future__ import annotations

from cvflow.arrays import get_xp


def pad_amounts(h, w, multiple):
    """(top, bottom, left, right) to reach multiples, split evenly, extra pixel bottom/right."""
    ph = (-h) % multiple
    pw = (-w) % multiple
    return ph // 2, ph - ph // 2, pw // 2, pw - pw // 2


def pad_replicate(img, pads):
    """Edge-replicate pad the two leading spatial axes of (H, W, ...) or (N, H, W, C) arrays."""
    xp = get_xp(img)
    top, bottom, left, right = pads
    lead = 1 if img.ndim == 4 else 0
    width = [(0, 0)] * img.ndim
    width[lead] = (top, bottom)
    width[lead + 1] = (left, right)
    return xp.pad(img, width, mode="edge")


def pad_to_multiple(img, multiple):
    """Replicate-pad (H, W, C) or (N, H, W, C) so H and W are multiples of `multiple`.

    Returns (padded, pads) with pads = (top, bottom, left, right).
    """
    lead = 1 if img.ndim == 4 else 0
    pads = pad_amounts(img.shape[lead], img.shape[lead + 1], multiple)
    return pad_replicate(img, pads), pads


def unpad(x, pads):
    """Crop what pad_to_multiple added; x is (H, W, ...) or (N, H, W, C)."""
    top, bottom, left, right = pads
    lead = 1 if x.ndim == 4 else 0
    h, w = x.shape[lead], x.shape[lead + 1]
    sl = [slice(None)] * x.ndim
    sl[lead] = slice(top, h - bottom)
    sl[lead + 1] = slice(left, w - right)
    return x[tuple(sl)]
