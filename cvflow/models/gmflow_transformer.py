"""GMFlow's feature Transformer and its self-attention flow propagation, NHWC.

Each of the layers is self-attention then cross-attention with a feed-forward
network; both frames go through together (frame 0 attends to frame 1 and frame 1
to frame 0) as one batch. With splits > 1 attention is restricted to s x s
windows, shifted by half a window in every odd layer.
"""
from __future__ import annotations



def _attend(be, q, k, v, splits, shift, mask):
    """Single-head attention of (N, H, W, C) maps, full or in (shifted) windows."""
    if splits > 1:
        return be.window_attention(q, k, v, splits, shift=shift, mask=mask)
    n, h, w, c = q.shape
    out = be.attention(q.reshape(n, h * w, c), k.reshape(n, h * w, c), v.reshape(n, h * w, c))
    return out.reshape(n, h, w, c)


def attention_layer(be, p, source, target, splits, shift=False, mask=None):
    """source + message; message = norm1(merge(attn(q(source), k(target), v(target)))).

    Layers with an `mlp` (cross-attention) refine the message as
    norm2(mlp([source, message])) before the residual sum. source, target: (N, H, W, C).
    """
    q = be.linear(source, p["q_proj"])
    k = be.linear(target, p["k_proj"])
    v = be.linear(target, p["v_proj"])
    msg = be.layer_norm(be.linear(_attend(be, q, k, v, splits, shift, mask), p["merge"]), p["norm1"])
    if "mlp" in p:
        msg = _feed_forward(be, p, source, msg)
    return be.add(source, msg)


def _mlp(be, p, src, msg):
    """norm2(mlp([src, msg])) of (T, C) tokens."""
    hidden = be.gelu_(be.linear(be.concat([src, msg]), p["mlp"]["0"]))
    return be.layer_norm(be.linear(hidden, p["mlp"]["2"]), p["norm2"])


def _feed_forward(be, p, source, msg):
    """norm2(mlp([source, msg])), in blocks of `be.token_rows` tokens (the backend's
    choice: cache-sized on a CPU, all at once on a GPU)."""
    c = source.shape[-1]
    src = source.reshape(-1, c)
    flat = msg.reshape(-1, c)
    rows = be.token_rows or flat.shape[0]
    if rows >= flat.shape[0]:
        return _mlp(be, p, src, flat).reshape(msg.shape)
    out = be.xp.empty_like(flat)
    for r0 in range(0, flat.shape[0], rows):
        r1 = r0 + rows
        out[r0:r1] = _mlp(be, p, src[r0:r1], flat[r0:r1])
    return out.reshape(msg.shape)


def feature_transformer(be, p, f0, f1, splits):
    """Both frames' features after every layer: (g0, g1), each (N, H, W, C)."""
    n, h, w, _ = f0.shape
    mask = be.shifted_window_mask(h, w, splits) if splits > 1 else None
    # Frame 0 queries frame 1 and frame 1 queries frame 0 in one batch.
    src = be.concat([f0, f1], axis=0)
    for i in range(len(p["layers"])):
        layer = p["layers"][str(i)]
        shift = splits > 1 and i % 2 == 1
        tgt = be.concat([src[n:], src[:n]], axis=0)
        src = attention_layer(be, layer["self_attn"], src, src, splits, shift, mask)
        src = attention_layer(be, layer["cross_attn_ffn"], src, tgt, splits, shift, mask)
    return src[:n], src[n:]


def propagate_flow(be, p, feature, flow, radius):
    """Self-attention over `feature` that smooths `flow` (N, H, W, 2).

    radius <= 0: every pixel attends to all pixels. The reference projects the key
    from the projected query (k_proj(q_proj(f))), a harmless quirk kept for its weights.
    radius > 0: attention over the (2r+1)^2 neighbourhood, zero-padded keys and flow.
    """
    q = be.linear(feature, p["q_proj"])
    if radius > 0:
        return be.local_attention(q, be.linear(feature, p["k_proj"]), flow, radius)
    n, h, w, c = q.shape
    k = be.linear(q, p["k_proj"])
    out = be.attention(q.reshape(n, h * w, c), k.reshape(n, h * w, c), flow.reshape(n, h * w, 2))
    return out.reshape(n, h, w, 2)
