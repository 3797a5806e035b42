"""SEA-RAFT S / M / L (Wang, Lipson & Deng, "SEA-RAFT: Simple, Efficient, Accurate RAFT for
Optical Flow", ECCV 2024; princeton-vl/SEA-RAFT, BSD-3-Clause).

RAFT's all-pairs correlation pyramid and lookup, with three changes: ResNet encoders with
eval-mode batch norm (ResNet18-style for S, ResNet34-style for M and L); a context encoder
that sees both frames and regresses the initial flow (no zero start); and an update made
of two ConvNeXt blocks (7x7 depthwise convolution, channels-last LayerNorm, Linear, exact
GELU, Linear, per-channel scale) instead of a GRU. Each update's head predicts a flow
delta and 4 channels of uncertainty `info` = [w0, w1, raw_b0, raw_b1]: the logits and
log-scales of a mixture of two Laplace distributions of the flow error; they are
upsampled with the flow's convex mask (without the x8 of the flow).
L is M's architecture run with 12 updates instead of 4.

Weight keys are the release files' (`Tartan-C-T-TSKH432x960-M.pth`, ...; no prefix).
Each strided encoder block registers its shortcut's BatchNorm twice, as `bn3.*` and
`downsample.1.*`; the model reads `downsample.1.*` (what the authors' loader ends with);
`adapt_weights` fills whichever of the two a file lacks (the HuggingFace safetensors
copies keep only `bn3`).

Options: `iters` (S, M: 4; L: 12), `corr_budget` (bytes; above it the correlation
pyramid is computed per lookup). No warm start: the initial flow is the model's own.
"""
from __future__ import annotations

from cvflow.backends import backend_of
from cvflow.models.base import ModelDef, register
from cvflow.models.raft import motion_encoder
from cvflow.ops.laplace import mixture_expected_error

_COMMON = {
    "stride": 8,
    "initial_dim": 64,
    "block_dims": (64, 128, 256),
    "dim": 128,                   # hidden state = context channels; features are 2 * dim
    "corr_levels": 4,
    "corr_radius": 4,
    "corr_convs": (256, 192),     # motion encoder: convc1 (1x1), convc2 (3x3)
    "flow_convs": (128, 64),      # convf1 (7x7), convf2 (3x3)
    "num_blocks": 2,              # ConvNeXt blocks per update
    "var_min": 0.0,               # clamps of the two log-scales (the eval configs' use_var)
    "var_max": 10.0,
}

CONFIGS = {
    "searaft-s": {**_COMMON, "layers": (2, 2, 2), "iters": 4},   # config/eval/sintel-S.json
    "searaft-m": {**_COMMON, "layers": (3, 4, 6), "iters": 4},   # sintel-M.json
    "searaft-l": {**_COMMON, "layers": (3, 4, 6), "iters": 12},  # sintel-L.json: M's weights
}

_INFO = 4  # info channels: two mixture logits, two raw log-scales
_LN_EPS = 1e-6


# -- encoders -------------------------------------------------------------------------------
def _basic_block(be, x, p, stride):
    """ResNet basic block: two 3x3 conv + BN + ReLU, plus a 1x1/stride conv + BN shortcut
    where the shape changes."""
    y = be.batch_norm_(be.conv2d(x, p["conv1"], stride=stride, padding=1), p["bn1"], relu=True)
    y = be.batch_norm_(be.conv2d(y, p["conv2"], padding=1), p["bn2"], relu=True)
    if "downsample" in p:
        x = be.batch_norm_(be.conv2d(x, p["downsample"]["0"], stride=stride), p["downsample"]["1"])
    return be.add_relu_(y, x)


def encoder(be, x, p, config):
    """ResNetFPN: (N, H, W, Cin) -> (N, H/8, W/8, 2 * dim). 7x7/2 stem, three stages (strides
    1, 2, 2) of `layers` basic blocks, a 1x1 output convolution."""
    x = be.batch_norm_(be.conv2d(x, p["conv1"], stride=2, padding=3), p["bn1"], relu=True)
    for s, (count, stride) in enumerate(zip(config["layers"], (1, 2, 2))):
        stage = p[f"layer{s + 1}"]
        for j in range(count):
            x = _basic_block(be, x, stage[str(j)], stride if j == 0 else 1)
    return be.conv2d(x, p["final_conv"])


# -- update ---------------------------------------------------------------------------------
def convnext_block(be, x, p):
    """ConvNeXt block with an output projection: final(x + gamma * pw2(gelu(pw1(ln(dw(x))))))."""
    y = be.depthwise_conv2d(x, p["dwconv"], padding=3)
    y = be.layer_norm(y, p["norm"], eps=_LN_EPS)
    y = be.gelu(be.linear(y, p["pwconv1"]))
    y = be.linear(y, p["pwconv2"])
    return be.conv2d(be.add_scaled(x, p["gamma"], y), p["final"])


def update(be, net, ctx, corr, flow, p, config):
    """One refinement: new hidden state from (state, context, correlation window, flow)."""
    with be.fused():  # the motion encoder's biases, ReLUs and concatenations in its convs' gathers
        motion = motion_encoder(be, flow, corr, p["encoder"], config)
    inp = be.concat([ctx, motion])
    for j in range(config["num_blocks"]):
        net = convnext_block(be, be.concat([net, inp]), p["refine"][str(j)])
    return net


def _head(be, net, p):
    """flow_head: (N, h, w, dim) -> (N, h, w, 2 + 4): [flow or delta, info]."""
    return be.same_conv(be.same_conv(net, p["0"], act="relu"), p["2"])


def _upsample(be, flow, info, net, p, stride):
    """Flow (N, h, w, 2) coarse px and info (N, h, w, 4) -> (N, sh, sw, 6): the flow in full-
    resolution px, the info mixed by the same convex mask but not scaled."""
    mask = be.same_conv(be.same_conv(net, p["0"], act="relu"), p["2"])
    up = be.convex_upsample(be.concat([flow, info]), be.scale(mask, 0.25), stride)
    # convex_upsample scales every channel by `stride`, a power of two: dividing it back
    # out of the info channels is exact.
    return be.concat([up[..., :2], be.scale(up[..., 2:], 1 / stride)])


# -- model ----------------------------------------------------------------------------------
def _prepare(be, img0, img1, stride):
    """Two (H, W, 3) BGR (or (H, W) gray) 0..255 frames -> ((2, H', W', 3) RGB in -1..1,
    replicate-padded to a multiple of `stride` as RAFT's InputPadder, pads)."""
    return be.frames(img0, img1, stride, norm="signed")


def _direction(be, params, frames, fmap0, fmap1, config, options):
    """Flow and info (1, H', W', 6) of frames[0] -> frames[1] (padded), given their features."""
    dim = config["dim"]
    cnet = be.conv2d(encoder(be, be.concat([frames[:1], frames[1:]]), params["cnet"], config),
                     params["init_conv"], padding=1)
    net, ctx = be.contiguous(cnet[..., :dim]), be.contiguous(cnet[..., dim:])
    head = _head(be, net, params["flow_head"])
    flow, info = be.contiguous(head[..., :2]), head[..., 2:]
    corr = be.build_corr(fmap0, fmap1, config["corr_levels"], options.get("corr_budget", 1 << 30))
    n, h, w, _ = flow.shape
    coords0 = be.coords_grid(n, h, w)
    for _ in range(options.get("iters", config["iters"])):
        window = be.corr_lookup(corr, be.add(coords0, flow), config["corr_radius"])
        net = update(be, net, ctx, window, flow, params["update_block"], config)
        head = _head(be, net, params["flow_head"])
        flow, info = be.add(flow, head[..., :2]), head[..., 2:]
    return _upsample(be, flow, info, net, params["upsample_weight"], config["stride"])


def forward(params, img0, img1, config, options, init_flow=None):
    """Flow from img0 to img1 with its uncertainty.

    img0, img1: (H, W, 3) BGR or (H, W) gray in 0..255, float32 (or uint8 as uploaded to a
    GPU). init_flow: unused (no warm start).
    Returns (H, W, 6) float32: flow[y, x] = (dx, dy) px in channels 0-1, the info
    [w0, w1, raw_b0, raw_b1] in channels 2-5 (`uncertainty` turns it into px).
    """
    be = backend_of(params)
    frames, pads = _prepare(be, img0, img1, config["stride"])
    fmaps = encoder(be, frames, params["fnet"], config)
    up = _direction(be, params, frames, fmaps[:1], fmaps[1:], config, options)
    return be.crop(up, pads)


def forward_both(params, img0, img1, config, options):
    """Both directions, (fw, bw), each as `forward` returns it; the feature encoder's pass
    over both frames is shared (the context encoder sees the frames in each order)."""
    be = backend_of(params)
    frames, pads = _prepare(be, img0, img1, config["stride"])
    fmaps = encoder(be, frames, params["fnet"], config)
    fw = _direction(be, params, frames, fmaps[:1], fmaps[1:], config, options)
    bw = _direction(be, params, frames[::-1], fmaps[1:], fmaps[:1], config, options)
    return be.crop(fw, pads), be.crop(bw, pads)


def uncertainty(info, config):
    """Expected absolute flow error (px, per axis) of the mixture of Laplace the model
    predicts: (H, W, 4) info -> (H, W) float32 (`cvflow.ops.laplace`)."""
    return mixture_expected_error(info, config["var_min"], config["var_max"])


# -- checkpoint layout ----------------------------------------------------------------------
_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _conv(shapes, key, o, i, kh, kw=None):
    shapes[f"{key}.weight"] = (o, i, kh, kh if kw is None else kw)
    shapes[f"{key}.bias"] = (o,)


def _bn(shapes, key, c):
    for leaf in _BN:
        shapes[f"{key}.{leaf}"] = () if leaf == "num_batches_tracked" else (c,)


def _encoder_shapes(shapes, key, config, cin, out_dim):
    stem = config["initial_dim"]
    _conv(shapes, f"{key}.conv1", stem, cin, 7)
    _bn(shapes, f"{key}.bn1", stem)
    cin = stem
    for s, (count, planes) in enumerate(zip(config["layers"], config["block_dims"])):
        for j in range(count):
            blk = f"{key}.layer{s + 1}.{j}"
            i = cin if j == 0 else planes
            _conv(shapes, f"{blk}.conv1", planes, i, 3)
            _conv(shapes, f"{blk}.conv2", planes, planes, 3)
            _bn(shapes, f"{blk}.bn1", planes)
            _bn(shapes, f"{blk}.bn2", planes)
            if j == 0 and (s > 0 or i != planes):  # strided: the shortcut's BN, registered twice
                _bn(shapes, f"{blk}.bn3", planes)
                _conv(shapes, f"{blk}.downsample.0", planes, i, 1)
                _bn(shapes, f"{blk}.downsample.1", planes)
        cin = planes
    _conv(shapes, f"{key}.final_conv", out_dim, cin, 1)


def param_shapes(config):
    """{checkpoint key: shape} for every tensor of the release checkpoint."""
    d, s = config["dim"], config["stride"]
    shapes: dict = {}
    _encoder_shapes(shapes, "cnet", config, 6, 2 * d)
    _conv(shapes, "init_conv", 2 * d, 2 * d, 3)
    _conv(shapes, "upsample_weight.0", 2 * d, d, 3)
    _conv(shapes, "upsample_weight.2", 9 * s * s, 2 * d, 1)
    _conv(shapes, "flow_head.0", 2 * d, d, 3)
    _conv(shapes, "flow_head.2", 2 + _INFO, 2 * d, 3)
    _encoder_shapes(shapes, "fnet", config, 3, 2 * d)
    enc = "update_block.encoder"
    c1, c2 = config["corr_convs"]
    f1, f2 = config["flow_convs"]
    _conv(shapes, f"{enc}.convc1", c1, config["corr_levels"] * (2 * config["corr_radius"] + 1) ** 2, 1)
    _conv(shapes, f"{enc}.convc2", c2, c1, 3)
    _conv(shapes, f"{enc}.convf1", f1, 2, 7)
    _conv(shapes, f"{enc}.convf2", f2, f1, 3)
    _conv(shapes, f"{enc}.conv", d - 2, c2 + f2, 3)
    width = 3 * d  # [net, context, motion]
    for j in range(config["num_blocks"]):
        blk = f"update_block.refine.{j}"
        shapes[f"{blk}.gamma"] = (width,)
        _conv(shapes, f"{blk}.dwconv", width, 1, 7)
        shapes[f"{blk}.norm.weight"] = shapes[f"{blk}.norm.bias"] = (width,)
        shapes[f"{blk}.pwconv1.weight"], shapes[f"{blk}.pwconv1.bias"] = (4 * d, width), (4 * d,)
        shapes[f"{blk}.pwconv2.weight"], shapes[f"{blk}.pwconv2.bias"] = (width, 4 * d), (width,)
        _conv(shapes, f"{blk}.final", d, width, 1)
    return shapes


def adapt_weights(flat):
    """The shortcut BatchNorm under both of its keys: a file with only `bn3.*` (HuggingFace
    safetensors) or only `downsample.1.*` gets the other copied; where both are present the
    model reads `downsample.1.*`, as the authors' loader does."""
    out = dict(flat)
    for key, value in flat.items():
        if ".bn3." in key:
            out.setdefault(key.replace(".bn3.", ".downsample.1."), value)
        elif ".downsample.1." in key:
            out.setdefault(key.replace(".downsample.1.", ".bn3."), value)
    return out


_RELEASE = {"searaft-s": "Tartan-C-T-TSKH432x960-S.pth", "searaft-m": "Tartan-C-T-TSKH432x960-M.pth",
            "searaft-l": "Tartan-C-T-TSKH432x960-M.pth"}

for _name, _cfg in CONFIGS.items():
    register(ModelDef(
        name=_name,
        family="searaft",
        config=_cfg,
        param_shapes=param_shapes,
        forward=forward,
        options={"iters": _cfg["iters"], "corr_budget": 1 << 30},
        checkpoint=_RELEASE[_name],
        min_size=128,  # the 1/64-resolution pyramid level needs >= 2 px, as RAFT's
        prepare_size=128,
        reuse_bytes=32 << 20,
        description=f"SEA-RAFT-{_name[-1].upper()} (Wang, Lipson & Deng 2024)",
        forward_both=forward_both,
        info_channels=_INFO,
        uncertainty=uncertainty,
        adapt_weights=adapt_weights,
        device_frames=True,
    ))
