"""Convolutional GRU cells (RAFT's update operator), NHWC, on any backend.

h_new = (1 - z) * h + z * q with z = sigmoid(conv_z([h, x])), r = sigmoid(conv_r([h, x])),
q = tanh(conv_q([r * h, x])). Every convolution is 'same' (stride 1, zero padding k // 2).
The input x is given as the parts the reference concatenates: [c, m] (RAFT: the context
features, the same array in every update, and the motion features), or [m].

Convolution is linear in its input channels, so each gate conv is a sum of convs over the
blocks h, c, m (`gate_parts`, prepared once per backend): the c share (plus the biases)
is computed once per forward pass and memoised on the identity of c; the m share of all
three gates is one conv; only the h shares (z and r fused) remain per step, and those
can come from the caller (`h_zr`: RAFT's flow head computes them with its own conv of the
same state, see `Backend.flow_head`). No concatenated input is ever built.
"""
from __future__ import annotations

from cvflow.ops.parallel import map_spans


def gate_parts(pz, pr, pq, ch, cc, xp):
    """Gate weights split by input block: {"h_zr", "h_q", "c", "x", "bias"}.

    The "c" and "x" convs output all three gates (z, r, q) stacked on the channel axis;
    "c" is None when cc = 0. z and r rows are pre-scaled by 1/2 (exact in floating point):
    sigmoid(a) is computed as (tanh(a / 2) + 1) / 2, so the gates' halving comes for free.
    """
    half = xp.asarray([0.5] * (2 * ch) + [1.0] * ch, dtype=pz["weight"].dtype)
    w = xp.concatenate([pz["weight"], pr["weight"], pq["weight"]], axis=0) * half[:, None, None, None]

    def blk(a):
        return {"weight": xp.ascontiguousarray(a)}

    return {
        "h_zr": blk(w[:2 * ch, :ch]),
        "h_q": blk(w[2 * ch:, :ch]),
        "c": blk(w[:, ch:ch + cc]) if cc else None,
        "x": blk(w[:, ch + cc:]),
        "bias": xp.concatenate([pz["bias"], pr["bias"], pq["bias"]]) * half,
    }


def cell_parts(be, p, sfx, ch, cc):
    """`gate_parts` of cell `sfx` ("" for ConvGRU, "1"/"2" for SepConvGRU), prepared once."""
    pz, pr, pq = p[f"convz{sfx}"], p[f"convr{sfx}"], p[f"convq{sfx}"]
    return be.prepared(pz, f"gru{ch},{cc}", lambda: gate_parts(pz, pr, pq, ch, cc, be.xp))


def gru_cell(be, h, x, p, sfx, step=None):
    """One GRU step of cell `sfx` of the GRU weights p. h: (N, H, W, Ch); x: [c, m] or
    [m], each (N, H, W, C*). Returns the new state (N, H, W, Ch). The pointwise work
    between the convolutions runs in two fused passes over pixel pieces (in cache,
    shared among threads, on NumPy; one piece on other array modules), or in `step`
    (a backend's: `_step`'s signature and numbers, e.g. two CUDA kernels)."""
    xp = be.xp
    ch = h.shape[-1]
    cc = x[0].shape[-1] if len(x) > 1 else 0
    parts = cell_parts(be, p, sfx, ch, cc)
    memo = be.memo()
    g = _rows(be.same_conv(x[-1], parts["x"]))          # the motion's share of z, r, q
    if cc:
        key = ("gru_c", sfx, id(parts))
        hit = memo.get(key)
        if hit is None or hit[0] is not x[0]:           # a new context: its share, once
            const = be.add_bias_(be.same_conv(x[0], parts["c"]), parts["bias"])
            hit = memo[key] = (x[0], _rows(const))
        c = hit[1]
    else:
        c = parts["bias"][None]
    hit = memo.pop(("h_zr", sfx, id(parts)), None)
    hzr = _rows(hit[1] if hit is not None and hit[0] is h else be.same_conv(h, parts["h_zr"]))
    out = (step or _step)(xp, h, g, c, hzr, lambda rh: _rows(be.same_conv(rh, parts["h_q"])))
    memo["gru_out"] = (out, p, sfx, ch, cc)
    return out


def _step(xp, h, g, c, hzr, conv_q):
    """The pointwise passes of one step: g (P, 3Ch) input share, c (P or 1, 3Ch) constant
    share with biases, hzr (P, 2Ch) h's halved z, r share; conv_q(r * h) -> (P, Ch)."""
    ch = h.shape[-1]

    def rows(a, b):                                     # the constant's rows a..b (or the bias row)
        return c if len(c) == 1 else c[a:b]

    h2 = _rows(h)
    n = h2.shape[0]
    zr = xp.empty((n, 2 * ch), dtype=h.dtype)
    rh = xp.empty_like(h2)

    def gates(a, b):                                    # z, r = sigmoid(...), and r * h
        t = zr[a:b]
        xp.add(g[a:b, :2 * ch], rows(a, b)[:, :2 * ch], out=t)
        t += hzr[a:b]                                   # half the z, r pre-activations
        xp.tanh(t, out=t)
        t += 1
        t *= t.dtype.type(0.5)
        xp.multiply(t[:, ch:], h2[a:b], out=rh[a:b])

    map_spans(gates, n, 3 * ch, xp)
    q = conv_q(rh.reshape(h.shape))
    out = xp.empty_like(h2)

    def blend(a, b):                                    # (1 - z) * h + z * tanh(q)
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


def head_with_h_share(be, head, last):
    """RAFT-small: flow_head.conv1 with the next step's h share of z, r appended, when the
    state just came out of a GRU cell whose kernel is conv1's (a 3x3 ConvGRU): then one
    convolution of the state serves both. last: the memo of that cell (`gru_cell`).
    Returns (fused conv params, the memo key for `gru_cell`) or None."""
    _, p, sfx, ch, cc = last
    first = "1" if sfx == "2" else sfx                  # the next update starts with this cell
    parts = cell_parts(be, p, first, ch, cc)
    share = parts["h_zr"]["weight"]
    if share.shape[2:] != head["weight"].shape[2:]:
        return None
    xp = be.xp

    def make():
        return {"weight": xp.concatenate([head["weight"], share]),
                "bias": xp.concatenate([head["bias"], xp.zeros(share.shape[0], share.dtype)])}

    return be.prepared(head, f"with_gru{id(parts)}", make), ("h_zr", first, id(parts))
