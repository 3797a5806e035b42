"""Normalisation layers in inference form, NHWC."""
from __future__ import annotations

from cvflow.backend import get_xp


def batch_norm(x, p, eps=1e-5):
    """BatchNorm2d with running statistics. x (N,H,W,C); p: weight, bias, running_mean, running_var (C,)."""
    xp = get_xp(x)
    scale = p["weight"] / xp.sqrt(p["running_var"] + x.dtype.type(eps))
    shift = p["bias"] - p["running_mean"] * scale
    return x * scale.astype(x.dtype) + shift.astype(x.dtype)


def instance_norm(x, eps=1e-5):
    """InstanceNorm2d without affine or running stats: per sample and channel over H, W.

    Statistics accumulate in float64 as PyTorch's CPU kernel does (mean rounded to x's
    dtype before centring); recurrent models (RAFT) amplify float32-sum differences.
    """
    xp = get_xp(x)
    n = x.shape[1] * x.shape[2]
    mean = x.mean(axis=(1, 2), keepdims=True, dtype=xp.float64).astype(x.dtype)
    centred = x - mean
    var = (centred * centred).sum(axis=(1, 2), keepdims=True, dtype=xp.float64) / n
    return centred * (1 / xp.sqrt(var + eps)).astype(x.dtype)


def layer_norm(x, p, eps=1e-5):
    """LayerNorm over the last axis with affine weight and bias."""
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    var = (centred * centred).mean(axis=-1, keepdims=True)
    return centred / get_xp(x).sqrt(var + x.dtype.type(eps)) * p["weight"] + p["bias"]


def channel_norm(x):
    """L2 norm over channels (FlowNet2's ChannelNorm): (N, H, W, C) -> (N, H, W, 1)."""
    return get_xp(x).sqrt((x * x).sum(axis=-1, keepdims=True))
