"""GMFlow (Xu et al., CVPR 2022): global matching with a Transformer, on NumPy.

A CNN backbone gives 1/8 features (and, with refinement, 1/4 ones); a Transformer
lets both frames' features attend to themselves and each other; a softmax over
all-pairs correlation gives flow as the expected match position; self-attention
propagates flow; convex upsampling returns to full resolution. The refinement
variant repeats the Transformer and a local (radius-4) matching at 1/4 after
warping frame 1's features by the upsampled 1/8 flow.
"""
from __future__ import annotations

from cvflow.backends import backend_of
from cvflow.models.base import ModelDef, register
from cvflow.models.gmflow_transformer import feature_transformer, propagate_flow

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BACKBONE_DIMS = (64, 96, 128)

BASE_CONFIG = {"feature_channels": 128, "num_transformer_layers": 6, "ffn_dim_expansion": 4}


# --- backbone ---------------------------------------------------------------------
# `be` is the backend the weights were placed on (cvflow.backends): every op runs on it.

def residual_block(be, p, x, stride):
    """Two 3x3 convs with instance norm and ReLU; a 1x1 conv + norm on the skip when the shape changes."""
    y = be.instance_norm(be.conv2d(x, p["conv1"], stride=stride, padding=1), relu=True, inplace=True)
    y = be.instance_norm(be.conv2d(y, p["conv2"], padding=1), relu=True, inplace=True)
    if "downsample" in p:
        x = be.instance_norm(be.conv2d(x, p["downsample"]["0"], stride=stride), inplace=True)
    return be.add_relu_(y, x)


def backbone(be, p, x, num_scales):
    """(N, H, W, 3) normalised RGB -> feature maps from coarse (1/8) to fine, 128 channels each."""
    x = be.instance_norm(be.conv2d(x, p["conv1"], stride=2, padding=3), relu=True, inplace=True)
    last_stride = 2 if num_scales == 1 else 1   # refinement keeps 1/4 here
    for name, stride in (("layer1", 1), ("layer2", 2), ("layer3", last_stride)):
        x = residual_block(be, p[name]["0"], x, stride)
        x = residual_block(be, p[name]["1"], x, 1)
    x = be.conv2d(x, p["conv2"])
    if num_scales == 1:
        return [x]
    # One shared 3x3 conv at strides 1, 2, ... gives the coarser scales ("trident").
    feats = [be.conv2d(x, p["trident_conv"], stride=2 ** i, padding=1) for i in range(num_scales)]
    return feats[::-1]


# --- upsampling -------------------------------------------------------------------

def upsample_flow(be, p, flow, feature, factor):
    """Convex upsampling with weights predicted from [flow, feature] (no mask scaling, unlike RAFT)."""
    x = be.concat([flow, feature])
    mask = be.conv2d(be.conv2d(x, p["0"], padding=1, act="relu"), p["2"])
    return be.convex_upsample(flow, mask, factor)


# --- forward ----------------------------------------------------------------------

def add_window_position(be, f0, f1, splits):
    """Add the same sine encoding to both (N, H, W, C) maps, restarted in each of splits x splits windows."""
    _, h, w, c = f0.shape
    pos = be.window_position(h, w, c, splits)
    return be.add(f0, pos), be.add(f1, pos)


def gmflow_flow(be, p, frames, config, bidirectional=False):
    """Flow at the padded resolution. frames: (2, H, W, 3) normalised RGB, H and W
    multiples of the padding factor. Returns (B, H, W, 2), B = 2 (forward, backward)
    when bidirectional else 1."""
    num_scales = config["num_scales"]
    feats = backbone(be, p["backbone"], frames, num_scales)
    flow = None
    for s in range(num_scales):
        f0, f1 = feats[s][:1], feats[s][1:]
        if bidirectional and s > 0:
            f0, f1 = be.concat([f0, f1], axis=0), be.concat([f1, f0], axis=0)
        if flow is not None:
            _, h, w, _ = flow.shape
            flow = be.scale(be.resize_bilinear(flow, 2 * h, 2 * w, align_corners=True), 2)
            f1 = be.warp(f1, flow, padding="zeros")
        splits = config["attn_splits_list"][s]
        f0, f1 = add_window_position(be, f0, f1, splits)
        f0, f1 = feature_transformer(be, p["transformer"], f0, f1, splits)
        if bidirectional and s == 0:
            # Backward flow: frame 1 matched against frame 0 with the same features.
            f0, f1 = be.concat([f0, f1], axis=0), be.concat([f1, f0], axis=0)
        radius = config["corr_radius_list"][s]
        delta = be.global_matching(f0, f1) if radius <= 0 else be.local_matching(f0, f1, radius)
        flow = delta if flow is None else be.add(flow, delta)
        flow = propagate_flow(be, p["feature_flow_attn"], f0, flow, config["prop_radius_list"][s])
    return upsample_flow(be, p["upsampler"], flow, f0, config["upsample_factor"])


def forward(params, img0, img1, config, options, init_flow=None):
    """cvflow forward protocol: BGR (H, W, 3) float32 0..255 frames -> (H, W, 2) flow.

    With options["bidirectional"] it returns (forward flow, backward flow), both (H, W, 2).
    GMFlow takes no initial flow; `init_flow` is ignored.
    """
    be = backend_of(params)
    # BGR 0..255 -> RGB with ImageNet mean/std, replicate-padded.
    frames, pads = be.frames(img0, img1, config["padding_factor"], "mean_std", IMAGENET_MEAN, IMAGENET_STD)
    bidir = bool(options.get("bidirectional", False))
    flows = gmflow_flow(be, params, frames, config, bidirectional=bidir)
    if bidir:
        return be.crop(flows, pads), be.crop(flows[1:], pads)
    return be.crop(flows, pads)


def forward_both(params, img0, img1, config, options):
    """(flow img0 -> img1, flow img1 -> img0), each (H, W, 2): GMFlow's bidirectional mode
    (one feature pass, the matching transposed)."""
    return forward(params, img0, img1, config, {**options, "bidirectional": True})


# --- definition -------------------------------------------------------------------

def _layer_shapes(prefix, c, ffn):
    shapes = {f"{prefix}.{n}.weight": (c, c) for n in ("q_proj", "k_proj", "v_proj", "merge")}
    shapes.update({f"{prefix}.norm1.weight": (c,), f"{prefix}.norm1.bias": (c,)})
    if ffn:
        shapes.update({f"{prefix}.mlp.0.weight": (2 * c * ffn, 2 * c), f"{prefix}.mlp.2.weight": (c, 2 * c * ffn),
                       f"{prefix}.norm2.weight": (c,), f"{prefix}.norm2.bias": (c,)})
    return shapes


def param_shapes(config):
    """Every checkpoint key and its shape for a config."""
    c = config["feature_channels"]
    d0, d1, d2 = BACKBONE_DIMS
    shapes = {"backbone.conv1.weight": (d0, 3, 7, 7)}
    cin = d0
    for i, d in enumerate(BACKBONE_DIMS, start=1):
        for j in range(2):
            pre = f"backbone.layer{i}.{j}"
            shapes[f"{pre}.conv1.weight"] = (d, cin if j == 0 else d, 3, 3)
            shapes[f"{pre}.conv2.weight"] = (d, d, 3, 3)
            if j == 0 and cin != d:
                shapes[f"{pre}.downsample.0.weight"] = (d, cin, 1, 1)
                shapes[f"{pre}.downsample.0.bias"] = (d,)
        cin = d
    shapes.update({"backbone.conv2.weight": (c, d2, 1, 1), "backbone.conv2.bias": (c,)})
    if config["num_scales"] > 1:
        shapes["backbone.trident_conv.weight"] = (c, c, 3, 3)
    for i in range(config["num_transformer_layers"]):
        shapes.update(_layer_shapes(f"transformer.layers.{i}.self_attn", c, 0))
        shapes.update(_layer_shapes(f"transformer.layers.{i}.cross_attn_ffn", c, config["ffn_dim_expansion"]))
    for n in ("q_proj", "k_proj"):
        shapes[f"feature_flow_attn.{n}.weight"] = (c, c)
        shapes[f"feature_flow_attn.{n}.bias"] = (c,)
    k = config["upsample_factor"]
    shapes.update({"upsampler.0.weight": (256, 2 + c, 3, 3), "upsampler.0.bias": (256,),
                   "upsampler.2.weight": (9 * k * k, 256, 1, 1), "upsampler.2.bias": (9 * k * k,)})
    return shapes


GMFLOW_CONFIG = {**BASE_CONFIG, "num_scales": 1, "upsample_factor": 8, "attn_splits_list": [2],
                 "corr_radius_list": [-1], "prop_radius_list": [-1], "padding_factor": 16}
GMFLOW_REFINE_CONFIG = {**BASE_CONFIG, "num_scales": 2, "upsample_factor": 4, "attn_splits_list": [2, 8],
                        "corr_radius_list": [-1, 4], "prop_radius_list": [-1, 1], "padding_factor": 32}

register(ModelDef(
    name="gmflow", family="gmflow", config=GMFLOW_CONFIG, param_shapes=param_shapes, forward=forward,
    options={"bidirectional": False}, checkpoint="gmflow_things-e9887eda.pth", min_size=0,
    prepare_size=64, forward_both=forward_both, device_frames=True,
    description="GMFlow, global matching at 1/8 with a 6-layer Transformer (Things)."))
register(ModelDef(
    name="gmflow-refine", family="gmflow", config=GMFLOW_REFINE_CONFIG, param_shapes=param_shapes,
    forward=forward, options={"bidirectional": False}, checkpoint="gmflow_with_refine_things-36579974.pth",
    min_size=0, prepare_size=64, forward_both=forward_both, device_frames=True,
    description="GMFlow with refinement: global matching at 1/8, local (r=4) at 1/4 (Things)."))
