"""Convolutional GRU cells (RAFT's update operator), NHWC.

h_new = (1 - z) * h + z * q with z = sigmoid(conv_z([h, c, x])), r = sigmoid(conv_r([h, c, x])),
q = tanh(conv_q([r * h, c, x])). Every convolution is 'same' (stride 1, zero padding k // 2).
c is an optional input that stays constant across updates (RAFT's context features).

Convolution is linear in its input channels, so each gate conv is computed as a sum of
convs over the blocks h, c, x: the c part (plus the biases) is computed once by
`gate_constant`, the x part of all three gates is one conv, and only the h parts (z and r
fused) remain per step; no concatenated input is ever built.
"""
from __future__ import annotations

from cvflow.backend import get_xp
from cvflow.ops.conv import conv2d
from cvflow.ops.parallel import map_spans


def _same(x, p):
    """Stride-1 convolution whose output keeps the input's height and width (odd kernels)."""
    kh, kw = p["weight"].shape[2:]
    return conv2d(x, p, padding=(kh // 2, kw // 2))


def _parts(pz, pr, pq, ch, cc):
    """Gate weights split by input block (cached on pz): {"h_zr", "h_q", "c", "x", "bias"}.

    The "c" and "x" convs output all three gates (z, r, q) stacked on the channel axis.
    """
    key = f"_parts{ch},{cc}"
    parts = pz.get(key)
    if parts is None:
        xp = get_xp(pz["weight"])
        # z and r rows are pre-scaled by 1/2 (exact in floating point): sigmoid(a) is
        # computed as (tanh(a / 2) + 1) / 2, so the gates' halving comes for free
        half = xp.asarray([0.5] * (2 * ch) + [1.0] * ch, dtype=pz["weight"].dtype)
        w = xp.concatenate([pz["weight"], pr["weight"], pq["weight"]], axis=0) * half[:, None, None, None]

        def blk(a):
            return {"weight": xp.ascontiguousarray(a)}

        parts = pz[key] = {
            "h_zr": blk(w[:2 * ch, :ch]),
            "h_q": blk(w[2 * ch:, :ch]),
            "c": blk(w[:, ch:ch + cc]),
            "x": blk(w[:, ch + cc:]),
            "bias": xp.concatenate([pz["bias"], pr["bias"], pq["bias"]]) * half,
        }
    return parts


def gate_constant(c, pz, pr, pq):
    """The constant input's share of the three gates' pre-activations, biases included
    (z and r halved, see `_parts`).

    c: (N, H, W, Cc), the gate weights' input channels being [h, c, x] with
    Ch = output channels. Returns (N, H, W, 3 * Ch) (z, r, q stacked).
    """
    ch, cc = pz["weight"].shape[0], c.shape[-1]
    parts = _parts(pz, pr, pq, ch, cc)
    out = _same(c, parts["c"])
    out += parts["bias"]
    return out


def gru_step(h, x, pz, pr, pq, const=None, h_zr=None):
    """One GRU update. h: (N, H, W, Ch) state; x: (N, H, W, Cx) input; p*: conv params
    with weights (Ch, Ch + Cc + Cx, kh, kw); const: `gate_constant(c, pz, pr, pq)` for the
    constant input c of Cc channels, or None when Cc = 0; h_zr: h convolved with
    `h_gate_params(pz, pr, pq, Cx)` when the caller has it already (else computed here).
    Returns the new state (N, H, W, Ch).

    The pointwise work between the convolutions runs in two fused passes over pixel
    pieces (in cache, shared among threads).
    """
    xp = get_xp(h)
    ch = h.shape[-1]
    cc = pz["weight"].shape[1] - ch - x.shape[-1]
    parts = _parts(pz, pr, pq, ch, cc)
    g = _rows(_same(x, parts["x"]))                 # x's share of z, r, q
    c = parts["bias"][None] if const is None else _rows(const)

    def rows(a, b):                                 # the constant's rows a..b (or the bias row)
        return c if len(c) == 1 else c[a:b]

    hzr = _rows(_same(h, parts["h_zr"]) if h_zr is None else h_zr)
    h2 = _rows(h)
    n = h2.shape[0]
    zr = xp.empty((n, 2 * ch), dtype=h.dtype)
    rh = xp.empty_like(h2)

    def gates(a, b):                                # z, r = sigmoid(...), and r * h
        t = zr[a:b]
        xp.add(g[a:b, :2 * ch], rows(a, b)[:, :2 * ch], out=t)
        t += hzr[a:b]                               # half the z, r pre-activations
        xp.tanh(t, out=t)
        t += 1
        t *= t.dtype.type(0.5)
        xp.multiply(t[:, ch:], h2[a:b], out=rh[a:b])

    map_spans(gates, n, 3 * ch, xp)
    q = _rows(_same(rh.reshape(h.shape), parts["h_q"]))
    out = xp.empty_like(h2)

    def blend(a, b):                                # (1 - z) * h + z * tanh(q)
        t = q[a:b]
        t += g[a:b, 2 * ch:] + rows(a, b)[:, 2 * ch:]
        xp.tanh(t, out=t)
        z = zr[a:b, :ch]
        o = out[a:b]
        xp.subtract(1, z, out=o)
        o *= h2[a:b]
        t *= z
        o += t

    map_spans(blend, n, 4 * ch, xp)
    return out.reshape(h.shape)


def _rows(a):
    """(..., C) -> (P, C) view (a reshape that copies only for a non-mergeable layout)."""
    return a.reshape(-1, a.shape[-1])


def h_gate_params(pz, pr, pq, cx):
    """Conv params (no bias) giving h's share of the halved z, r pre-activations of
    `gru_step` for an input x of cx channels: a caller convolving h anyway can fuse
    them into its own convolution and pass the result on as `h_zr`."""
    ch = pz["weight"].shape[0]
    return _parts(pz, pr, pq, ch, pz["weight"].shape[1] - ch - cx)["h_zr"]


def conv_gru(h, x, p, const=None, h_zr=None):
    """RAFT-small's ConvGRU: one step with 3x3 convolutions convz, convr, convq.
    const: `conv_gru_constant(c, p)` or None; h_zr: see `gru_step`."""
    return gru_step(h, x, p["convz"], p["convr"], p["convq"], None if const is None else const[0], h_zr)


def sep_conv_gru(h, x, p, const=None, h_zr=None):
    """RAFT's SepConvGRU: a 1x5 step (convz1, convr1, convq1), then a 5x1 step (…2).
    const: `sep_conv_gru_constant(c, p)` or None; h_zr: see `gru_step` (first step)."""
    c1, c2 = (None, None) if const is None else const
    h = gru_step(h, x, p["convz1"], p["convr1"], p["convq1"], c1, h_zr)
    return gru_step(h, x, p["convz2"], p["convr2"], p["convq2"], c2)


def conv_gru_constant(c, p):
    """Per-step constants of `conv_gru` for the constant input c (N, H, W, Cc)."""
    return [gate_constant(c, p["convz"], p["convr"], p["convq"])]


def sep_conv_gru_constant(c, p):
    """Per-step constants of `sep_conv_gru` for the constant input c (N, H, W, Cc)."""
    return [gate_constant(c, p[f"convz{s}"], p[f"convr{s}"], p[f"convq{s}"]) for s in "12"]
