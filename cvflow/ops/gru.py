"""Convolutional GRU cells (RAFT's update operator), NHWC.

h_new = (1 - z) * h + z * q with z = sigmoid(conv_z([h, x])), r = sigmoid(conv_r([h, x])),
q = tanh(conv_q([r * h, x])). Every convolution is 'same' (stride 1, zero padding k // 2).
"""
from __future__ import annotations

from cvflow.backend import get_xp
from cvflow.ops.act import sigmoid, tanh
from cvflow.ops.conv import conv2d


def _same(x, p):
    """Stride-1 convolution whose output keeps the input's height and width (odd kernels)."""
    kh, kw = p["weight"].shape[2:]
    return conv2d(x, p, padding=(kh // 2, kw // 2))


def _fused(pz, pr):
    """z and r gates read the same input: one convolution with both weight sets (cached)."""
    fused = pz.get("_zr")
    if fused is None:
        xp = get_xp(pz["weight"])
        fused = pz["_zr"] = {
            "weight": xp.concatenate([pz["weight"], pr["weight"]], axis=0),
            "bias": xp.concatenate([pz["bias"], pr["bias"]], axis=0),
        }
    return fused


def gru_step(h, x, pz, pr, pq):
    """One GRU update. h: (N, H, W, Ch) state; x: (N, H, W, Cx) input; p*: conv params
    with weights (Ch, Ch + Cx, kh, kw). Returns the new state (N, H, W, Ch)."""
    xp = get_xp(h)
    ch = h.shape[-1]
    zr = sigmoid(_same(xp.concatenate([h, x], axis=-1), _fused(pz, pr)))
    z, r = zr[..., :ch], zr[..., ch:]
    q = tanh(_same(xp.concatenate([r * h, x], axis=-1), pq))
    return (1 - z) * h + z * q


def conv_gru(h, x, p):
    """RAFT-small's ConvGRU: one step with 3x3 convolutions convz, convr, convq."""
    return gru_step(h, x, p["convz"], p["convr"], p["convq"])


def sep_conv_gru(h, x, p):
    """RAFT's SepConvGRU: a 1x5 step (convz1, convr1, convq1), then a 5x1 step (…2)."""
    h = gru_step(h, x, p["convz1"], p["convr1"], p["convq1"])
    return gru_step(h, x, p["convz2"], p["convr2"], p["convq2"])
