"""NeuFlow v2 (Zhang et al. 2024, neufieldrobotics/NeuFlow_v2): fast flow from global
matching at 1/16 and short refinement at 1/16 and 1/8.

A light CNN gives 1/16 features (190 channels plus two raw position channels) and 1/8
features (192) for both frames. Two cross-attention layers (each frame attends to the
other) and a BatchNorm refine the 1/16 features; their first 64 channels are the
context, the rest match. Global matching (softmax attention whose values are the pixel
grid) gives the 1/16 flow, refined `iters_s16` times from a radius-4 correlation lookup;
then flow, features and context go to 1/8 (nearest x2), merge with the 1/8 maps, and
`iters_s8` refinements follow; convex upsampling (mask from a stride-8 conv of frame 0)
gives full resolution. Weight keys are the release checkpoints' (`{'model': ...}`).

Options: `iters_s16` (default 1) and `iters_s8` (default 8), the authors' defaults at
commit 204b5e3 (an older release used 2 and 7); `corr_budget` (bytes, as RAFT's: above
it the correlation volumes are not stored, each lookup takes its own dot products; the
1/8 volume is 205 MB at 448x1024 and grows with the square of the pixel count).
"""
from __future__ import annotations

import numpy as np

from cvflow.backends import backend_of
from cvflow.models.base import ModelDef, register
from cvflow.models.gmflow_transformer import attention_layer

CONFIG = {
    "context_dim_s16": 64, "context_dim_s8": 64, "feature_dim_s1": 128, "feature_dim_s16": 128,
    "feature_dim_s8": 128, "iter_context_dim_s16": 64, "iter_context_dim_s8": 64, "iters_s16": 1,
    "iters_s8": 8, "padding_factor": 16, "corr_radius": 4, "corr_levels": 1, "upsample_factor": 8,
    "refine_num_layers": 5, "refine_inter_dim_s16": 128, "refine_inter_dim_s8": 96, "cross_attn_layers": 2,
}
OPTIONS = {"iters_s16": 1, "iters_s8": 8, "corr_budget": 1 << 30}
SLOPE = 0.1          # LeakyReLU of every ConvBlock
RADIUS_CHANNEL = 4.0  # the refine input's last channel: the lookup radius as a constant map
HIDDEN_CLAMP = 4.0    # hardtanh(-4, 4) on the iteration context


# -- layers ------------------------------------------------------------------------------
# `be` is the backend the weights were placed on (cvflow.backends): every op runs on it.
def conv_block(be, p, x, stride, padding):
    """The backbone's ConvBlock: (conv, BatchNorm, LeakyReLU 0.1) twice, the second 3x3."""
    x = be.conv_bn(x, p["conv1"], p["norm1"], stride=stride, padding=padding, act="leaky", slope=SLOPE)
    return be.conv_bn(x, p["conv2"], p["norm2"], padding=1, act="leaky", slope=SLOPE)


def position_channels(be, n, h, w):
    """(n, h, w, 2) raw positions (y - h/2, x - w/2), y first, as the authors' init_pos."""
    def make():
        ys, xs = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
        pos = np.stack([ys - np.float32(h / 2), xs - np.float32(w / 2)], axis=-1)
        return be.asarray(np.ascontiguousarray(np.broadcast_to(pos, (n, h, w, 2))))
    return be.const(("neuflow2_pos", n, h, w), make)


def backbone(be, p, frames):
    """(N, H, W, 3) RGB in 0..1 (H, W multiples of 16) -> (x16 (N, H/16, W/16, 192) with the
    position channels last, x8 (N, H/8, W/8, 192))."""
    img = be.avg_pool2x2(frames)                                   # 1/2
    x8 = conv_block(be, p["block_8_1"], img, 4, 2)
    img = be.avg_pool2x2(img)                                      # 1/4
    x8 = conv_block(be, p["block_cat_8"], be.concat([x8, conv_block(be, p["block_8_2"], img, 2, 2)]), 1, 1)
    img = be.avg_pool2x2(img)                                      # 1/8
    x16 = be.concat([conv_block(be, p["block_16_1"], img, 2, 2), conv_block(be, p["block_8_16"], x8, 2, 2)])
    x16 = conv_block(be, p["block_cat_16"], x16, 1, 1)
    n, h, w, _ = x16.shape
    return be.concat([x16, position_channels(be, n, h, w)]), x8


def cross_attention(be, p, feats):
    """Both frames' (2, h, w, C) features after the layers (frame 0 attends to frame 1 and
    frame 1 to frame 0, one batch) and the closing BatchNorm."""
    src = feats
    for i in range(len(p["layers"])):
        tgt = be.concat([src[1:], src[:1]], axis=0)
        src = attention_layer(be, p["layers"][str(i)], src, tgt, 1)
    return be.batch_norm_(be.xp.ascontiguousarray(src), p["norm"])


def merge(be, p, x):
    """merge_s8 / context_merge_s8: 3x3 conv, GELU, 3x3 conv folded with its BatchNorm."""
    x = be.gelu_(be.conv2d(x, p["0"], padding=1))
    return be.conv_bn(x, p["2"], p["3"], padding=1)


def refine(be, p, corr, context, iter_context, flow):
    """One refinement: (new iteration context, flow delta), from the input
    [corr 81, context, iteration context, flow 2, constant 4.0]."""
    n, h, w, _ = flow.shape
    radius = be.const(("neuflow2_radius", n, h, w), lambda: be.asarray(np.full((n, h, w, 1), RADIUS_CHANNEL)))
    x = be.concat([corr, context, iter_context, flow, radius])
    x = be.conv2d(x, p["conv1"]["conv"], padding=1, act="leaky", slope=SLOPE)
    x = be.conv2d(x, p["conv2"]["conv"], padding=1, act="leaky", slope=SLOPE)
    for i in range(len(p["conv_layers"])):
        x = be.conv2d(x, p["conv_layers"][str(i)]["conv"], padding=1, act="leaky", slope=SLOPE)
    x = be.conv2d(x, p["conv3"], padding=1)
    return be.hardtanh(x[..., 2:], -HIDDEN_CLAMP, HIDDEN_CLAMP), be.contiguous(x[..., :2])


def iterate(be, p, f0, f1, context, flow, iters, config, budget=1 << 30):
    """`iters` refinements of flow (1, h, w, 2) from the correlation of f0 with f1 (each
    (1, h, w, C); volumes stored up to `budget` bytes), from a zero iteration context."""
    xp = be.xp
    state = be.build_corr(xp.ascontiguousarray(f0), xp.ascontiguousarray(f1), config["corr_levels"], budget)
    n, h, w, _ = flow.shape
    d = p["conv3"]["weight"].shape[0] - 2
    grid = be.const(("neuflow2_grid", n, h, w), lambda: be.asarray(_coords_grid(n, h, w)))
    iter_context = be.const(("neuflow2_zeros", n, h, w, d), lambda: be.asarray(np.zeros((n, h, w, d))))
    for _ in range(iters):
        corr = be.corr_lookup(state, be.add(grid, flow), config["corr_radius"])
        iter_context, delta = refine(be, p, corr, context, iter_context, flow)
        flow = be.add(flow, delta)
    return flow


def _coords_grid(n, h, w):
    ys, xs = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
    return np.broadcast_to(np.stack([xs, ys], axis=-1), (n, h, w, 2))


def upsample(be, p, frame0, flow, factor):
    """Full-resolution flow (1, 8h, 8w, 2) px from the 1/8 flow: convex upsampling with a
    mask from [flow, conv_s8(frame 0)] (softmax over the 3x3 zero-padded neighbours)."""
    feature = conv_block(be, p["conv_s8"], frame0, factor, 0)
    q = p["upsample_s8"]
    x = be.conv2d(be.concat([flow, feature]), q["conv1"], padding=1, act="relu")
    mask = be.conv2d(be.conv2d(x, q["conv2"], padding=1, act="relu"), q["conv3"])
    return be.convex_upsample(flow, mask, factor)


# -- forward ---------------------------------------------------------------------------
def _prepare(be, img0, img1, factor):
    """Two (H, W, 3) BGR 0..255 frames -> ((2, H', W', 3) RGB in 0..1 replicate-padded to a
    multiple of `factor`, pads)."""
    return be.frames(img0, img1, factor, "unit")


def _features(be, params, frames, config):
    """What both directions share: the cross-attended 1/16 maps x16 (2, h, w, 192) and
    the merged 1/8 matching features f8 (2, 2h, 2w, 128) of both frames, and the 1/8
    backbone map x8 (its first channels are the 1/8 context)."""
    c16, c8 = config["context_dim_s16"], config["context_dim_s8"]
    x16, x8 = backbone(be, params["backbone"], frames)
    x16 = cross_attention(be, params["cross_attn_s16"], x16)
    f8 = merge(be, params["merge_s8"], be.concat([x8[..., c8:], be.upsample_nearest(x16[..., c16:], 2)]))
    return x16, x8, f8


def _direction(be, params, frames, shared, i, config, options):
    """Flow (1, H', W', 2) from frame i to frame 1 - i, given the shared features."""
    x16, x8, f8 = shared
    a, b = slice(i, i + 1), slice(1 - i, 2 - i)
    c16, c8 = config["context_dim_s16"], config["context_dim_s8"]
    ctx16 = be.relu(x16[a, ..., :c16])
    f0, f1 = be.contiguous(x16[a, ..., c16:]), be.contiguous(x16[b, ..., c16:])
    budget = options.get("corr_budget", 1 << 30)
    flow = iterate(be, params["refine_s16"], f0, f1, ctx16, be.global_matching(f0, f1),
                   options.get("iters_s16", 1), config, budget)
    flow = be.scale(be.upsample_nearest(flow, 2), 2)
    ctx8 = merge(be, params["context_merge_s8"], be.concat([be.relu(x8[a, ..., :c8]), be.upsample_nearest(ctx16, 2)]))
    flow = iterate(be, params["refine_s8"], f8[a], f8[b], ctx8, flow, options.get("iters_s8", 8), config, budget)
    return upsample(be, params, frames[a], flow, config["upsample_factor"])


def forward(params, img0, img1, config, options, init_flow=None):
    """Flow from img0 to img1: (H, W, 3) float32 BGR 0..255 frames -> (H, W, 2) float32 px.
    NeuFlow v2 takes no initial flow; `init_flow` is ignored."""
    be = backend_of(params)
    frames, pads = _prepare(be, img0, img1, config["padding_factor"])
    up = _direction(be, params, frames, _features(be, params, frames, config), 0, config, options)
    return be.crop(up, pads)


def forward_both(params, img0, img1, config, options):
    """(flow img0 -> img1, flow img1 -> img0): the backbone and the cross-attention (which
    treats both frames alike) run once; each direction then matches and refines."""
    be = backend_of(params)
    frames, pads = _prepare(be, img0, img1, config["padding_factor"])
    shared = _features(be, params, frames, config)
    fw = _direction(be, params, frames, shared, 0, config, options)
    bw = _direction(be, params, frames, shared, 1, config, options)
    return be.crop(fw, pads), be.crop(bw, pads)


# -- checkpoint layout -------------------------------------------------------------------
def _bn(shapes, key, c):
    for leaf in ("weight", "bias", "running_mean", "running_var"):
        shapes[f"{key}.{leaf}"] = (c,)
    shapes[f"{key}.num_batches_tracked"] = ()


def _conv_block(shapes, key, cin, cout, k):
    shapes[f"{key}.conv1.weight"] = (cout, cin, k, k)
    shapes[f"{key}.conv2.weight"] = (cout, cout, 3, 3)
    _bn(shapes, f"{key}.norm1", cout)
    _bn(shapes, f"{key}.norm2", cout)


def _refine_shapes(shapes, key, config, inter):
    r, ctx, itc = config["corr_radius"], config["context_dim_s16"], config["iter_context_dim_s16"]
    cin = (2 * r + 1) ** 2 * config["corr_levels"] + ctx + itc + 2 + 1
    shapes[f"{key}.conv1.conv.weight"] = (ctx + itc, cin, 3, 3)
    shapes[f"{key}.conv2.conv.weight"] = (inter, ctx + itc, 3, 3)
    for i in range(config["refine_num_layers"]):
        shapes[f"{key}.conv_layers.{i}.conv.weight"] = (inter, inter, 3, 3)
    shapes[f"{key}.conv3.weight"] = (itc + 2, inter, 3, 3)
    shapes[f"{key}.conv3.bias"] = (itc + 2,)


def param_shapes(config):
    """{checkpoint key: shape} for every tensor of the release checkpoint (155 keys)."""
    f16, c16, f8, c8 = (config[k] for k in ("feature_dim_s16", "context_dim_s16", "feature_dim_s8", "context_dim_s8"))
    shapes: dict = {}
    _conv_block(shapes, "backbone.block_8_1", 3, 2 * f8, 8)
    _conv_block(shapes, "backbone.block_8_2", 3, f8, 6)
    _conv_block(shapes, "backbone.block_cat_8", 3 * f8, f8 + c8, 3)
    _conv_block(shapes, "backbone.block_16_1", 3, f16, 6)
    _conv_block(shapes, "backbone.block_8_16", f8 + c8, f16, 6)
    _conv_block(shapes, "backbone.block_cat_16", 2 * f16, f16 + c16 - 2, 3)
    c = f16 + c16
    for i in range(config["cross_attn_layers"]):
        key = f"cross_attn_s16.layers.{i}"
        for n in ("q_proj", "k_proj", "v_proj", "merge"):
            shapes[f"{key}.{n}.weight"], shapes[f"{key}.{n}.bias"] = (c, c), (c,)
        shapes.update({f"{key}.norm1.weight": (c,), f"{key}.norm1.bias": (c,),
                       f"{key}.mlp.0.weight": (2 * c, 2 * c), f"{key}.mlp.2.weight": (c, 2 * c),
                       f"{key}.norm2.weight": (c,), f"{key}.norm2.bias": (c,)})
    _bn(shapes, "cross_attn_s16.norm", c)
    for key, cin, cout in (("merge_s8", f16 + f8, f8), ("context_merge_s8", c16 + c8, c8)):
        shapes[f"{key}.0.weight"] = (cout, cin, 3, 3)
        shapes[f"{key}.2.weight"] = (cout, cout, 3, 3)
        _bn(shapes, f"{key}.3", cout)
    _refine_shapes(shapes, "refine_s16", config, config["refine_inter_dim_s16"])
    _refine_shapes(shapes, "refine_s8", config, config["refine_inter_dim_s8"])
    _conv_block(shapes, "conv_s8", 3, config["feature_dim_s1"], 8)
    k = config["upsample_factor"]
    for name, o, i, kk in (("conv1", 256, 2 + config["feature_dim_s1"], 3), ("conv2", 512, 256, 3),
                           ("conv3", 9 * k * k, 512, 1)):
        shapes[f"upsample_s8.{name}.weight"], shapes[f"upsample_s8.{name}.bias"] = (o, i, kk, kk), (o,)
    return shapes


register(ModelDef(
    name="neuflow2", family="neuflow2", config=CONFIG, param_shapes=param_shapes, forward=forward,
    options=dict(OPTIONS), checkpoint=None,  # the release files are the tags (registry.json)
    # 1/16 maps of >= 2 px (the reference's align_corners lookup divides by size - 1); an
    # arena as RAFT's: the 1/8 correlation volume alone is 205 MB at 448x1024
    min_size=32, reuse_bytes=32 << 20, prepare_size=64, forward_both=forward_both, device_frames=True,
    description="NeuFlow v2 (Zhang et al. 2024): global matching at 1/16, refinement at 1/16 and 1/8"))
