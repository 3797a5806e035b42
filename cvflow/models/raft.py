"""RAFT and RAFT-small (Teed & Deng, "RAFT: Recurrent All-Pairs Field Transforms", ECCV 2020).

Both are one architecture under two configs: a feature encoder (both frames) and a
context encoder (first frame) at 1/8 resolution, an all-pairs correlation pyramid,
and `iters` recurrent updates of a 1/8-resolution flow, upsampled at the end (RAFT:
learned convex combination; RAFT-small: bilinear x8). Weight keys are those of the
release checkpoints (raft-things.pth, raft-small.pth, ...) without `module.`.

Options: `iters` (default 12; the authors evaluate with 32 on Sintel, 24 on KITTI and
FlyingChairs), `warm_start` (start from the caller's flow, see `calc`), `corr_budget`
(bytes; above it the correlation pyramid is not stored but computed per lookup).
"""
from __future__ import annotations

from cvflow.backends import backend_of
from cvflow.models.base import ModelDef, register
from cvflow.ops.pad import pad_replicate

_COMMON = {"corr_levels": 4, "stride": 8}

CONFIGS = {
    "raft": {
        **_COMMON,
        "block": "residual",          # encoder blocks: two 3x3 convs
        "widths": (64, 64, 96, 128),  # stem, layer1, layer2, layer3 channels
        "feature_dim": 256,
        "context_norm": "batch",
        "hidden_dim": 128,
        "context_dim": 128,
        "corr_radius": 4,
        "corr_convs": (256, 192),     # convc1 (1x1), convc2 (3x3)
        "flow_convs": (128, 64),      # convf1 (7x7), convf2 (3x3)
        "motion_dim": 128,            # encoder output incl. the 2 flow channels
        "gru": "separable",
        "head_dim": 256,
        "upsample": "convex",
    },
    "raft-small": {
        **_COMMON,
        "block": "bottleneck",        # encoder blocks: 1x1, 3x3, 1x1 at a quarter width
        "widths": (32, 32, 64, 96),
        "feature_dim": 128,
        "context_norm": "none",
        "hidden_dim": 96,
        "context_dim": 64,
        "corr_radius": 3,
        "corr_convs": (96,),
        "flow_convs": (64, 32),
        "motion_dim": 82,
        "gru": "conv",
        "head_dim": 128,
        "upsample": "bilinear",
    },
}

OPTIONS = {"iters": 12, "warm_start": False, "corr_budget": 1 << 30}
_SPLIT_PIXELS = 1920 * 1080  # frames from this size through the feature encoder one at a time


# -- layers ------------------------------------------------------------------------------
# `be` is the backend the weights were placed on (cvflow.backends): every op runs on it.
def _norm_relu(be, x, p, kind, relu=True):
    """Normalisation (`kind`: instance, batch or none), then ReLU unless relu=False.
    In place on x: always a fresh convolution output here."""
    if kind == "instance":
        return be.instance_norm(x, relu=relu, inplace=True)
    if kind == "batch":
        return be.batch_norm_(x, p, relu=relu)
    return be.relu_(x) if relu else x


def _shortcut(be, x, p, stride, norm):
    if stride == 1:
        return x
    return _norm_relu(be, be.conv2d(x, p["downsample"]["0"], stride=stride), p["downsample"].get("1"), norm,
                      relu=False)


def _residual_block(be, x, p, stride, norm):
    y = _norm_relu(be, be.conv2d(x, p["conv1"], stride=stride, padding=1), p.get("norm1"), norm)
    y = _norm_relu(be, be.conv2d_(y, p["conv2"], padding=1), p.get("norm2"), norm)  # over conv1's output
    return be.add_relu_(y, _shortcut(be, x, p, stride, norm))


def _bottleneck_block(be, x, p, stride, norm):
    y = _norm_relu(be, be.conv2d(x, p["conv1"]), p.get("norm1"), norm)
    y = _norm_relu(be, be.conv2d_(y, p["conv2"], stride=stride, padding=1), p.get("norm2"), norm)
    y = _norm_relu(be, be.conv2d(y, p["conv3"]), p.get("norm3"), norm)
    return be.add_relu_(y, _shortcut(be, x, p, stride, norm))


_BLOCKS = {"residual": _residual_block, "bottleneck": _bottleneck_block}
_STAGES = (("layer1", 1), ("layer2", 2), ("layer3", 2))


def encoder(be, x, p, config, norm):
    """(N, H, W, 3) -> (N, H/8, W/8, conv2 channels): 7x7/2 stem, three stages of two blocks."""
    block = _BLOCKS[config["block"]]
    x = _norm_relu(be, be.conv2d(x, p["conv1"], stride=2, padding=3), p.get("norm1"), norm)
    for name, stride in _STAGES:
        x = block(be, x, p[name]["0"], stride, norm)
        x = block(be, x, p[name]["1"], 1, norm)
    return be.conv2d(x, p["conv2"])


def motion_encoder(be, flow, corr, p, config):
    """Correlation and flow features -> (N, H, W, motion_dim), the flow in the last 2 channels."""
    cor = corr
    for i in range(len(config["corr_convs"])):
        cor = be.same_conv(cor, p[f"convc{i + 1}"], act="relu")
    flo = be.same_conv(flow, p["convf1"], act="relu")
    flo = be.same_conv(flo, p["convf2"], act="relu")
    out = be.same_conv(be.concat([cor, flo]), p["conv"], act="relu")
    return be.concat([out, flow])


def update(be, net, inp, corr, flow, p, config):
    """One refinement (the reference's update block): (hidden state, context, correlation
    window, flow) -> (new state, flow delta). The GRU's input is [context, motion]."""
    gru = be.sep_conv_gru if config["gru"] == "separable" else be.conv_gru
    with be.fused():  # the backend may run biases, ReLUs and concatenations in the next conv's gather
        motion = motion_encoder(be, flow, corr, p["encoder"], config)
        net = gru(net, [inp, motion], p["gru"])
    return net, be.flow_head(net, p["flow_head"])


def upsample_flow(be, flow, net, p, config):
    """1/8-resolution flow (N, h, w, 2) -> full resolution (N, 8h, 8w, 2), in full-resolution px."""
    s = config["stride"]
    if config["upsample"] == "convex":
        mask = be.same_conv(be.same_conv(net, p["mask"]["0"], act="relu"), p["mask"]["2"])
        return be.convex_upsample(flow, be.scale(mask, 0.25), s)
    n, h, w, _ = flow.shape
    return be.scale(be.resize_bilinear(flow, s * h, s * w, align_corners=True), s)


# -- model ---------------------------------------------------------------------------------
def _coarse_init(init_flow, pads, stride):
    """Full-resolution (H, W, 2) flow -> (1, H'/s, W'/s, 2) in coarse pixels: padded like the
    frames, averaged over s x s blocks, divided by s."""
    f = pad_replicate(init_flow, pads)
    h, w = f.shape[0] // stride, f.shape[1] // stride
    f = f.reshape(h, stride, w, stride, 2).mean(axis=(1, 3), dtype=f.dtype)
    return (f * f.dtype.type(1 / stride))[None]


def _prepare(be, img0, img1, stride):
    """Two (H, W, 3) BGR (or (H, W) gray) 0..255 frames -> ((2, H', W', 3) RGB in -1..1
    replicate-padded to a multiple of `stride`, pads)."""
    return be.frames(img0, img1, stride, norm="signed")


def _one_at_a_time(frames):
    """Whether frames (N, H, W, 3) are large enough to run one at a time: below that, N
    at once (the encoders, and calcBidirectional's directions where batches pay)."""
    return frames[0].size >= _SPLIT_PIXELS * 3


def _encode(be, frames, p, config, norm):
    """`encoder` over frames (N, H, W, 3), one frame at a time: a frame's features are then
    the same numbers whichever frames share the call (in one batch, float32 rounding depends
    on the batch: ~3e-6 in the features, ~2e-4 px in the flow after 12 updates), so
    calcBidirectional's directions equal calc's; and the peak memory is one frame's."""
    if len(frames) > 1:
        return be.concat([encoder(be, frames[i:i + 1], p, config, norm) for i in range(len(frames))], axis=0)
    return encoder(be, frames, p, config, norm)


def _refine(be, params, fmap0, fmap1, ctx, config, options, init=None):
    """The per-direction part: correlation of fmap0 (N, h, w, D) with fmap1, `iters`
    updates from the context features ctx (N, h, w, hidden + context) and the coarse
    initial flow `init` (N, h, w, 2) or None. Returns the flow (N, 8h, 8w, 2) px."""
    hd = config["hidden_dim"]
    net, inp = be.tanh(ctx[..., :hd]), be.relu(ctx[..., hd:])
    corr = be.build_corr(fmap0, fmap1, config["corr_levels"], options.get("corr_budget", 1 << 30))
    n, h, w, _ = net.shape
    coords0 = be.coords_grid(n, h, w)
    coords1 = coords0 if init is None else be.add(coords0, init)  # never written in place
    for _ in range(options.get("iters", 12)):
        window = be.corr_lookup(corr, coords1, config["corr_radius"])
        net, delta = update(be, net, inp, window, be.sub(coords1, coords0), params["update_block"], config)
        coords1 = be.add(coords1, delta)
    return upsample_flow(be, be.sub(coords1, coords0), net, params["update_block"], config)


def forward(params, img0, img1, config, options, init_flow=None):
    """Flow from img0 to img1.

    img0, img1: (H, W, 3) BGR or (H, W) gray in 0..255, float32 (or uint8 as uploaded to a
    GPU). init_flow: (H, W, 2) float32 px or None.
    Returns (H, W, 2) float32, flow[y, x] = (dx, dy) px.
    """
    be = backend_of(params)
    frames, pads = _prepare(be, img0, img1, config["stride"])
    fmaps = _encode(be, frames, params["fnet"], config, "instance")
    ctx = encoder(be, frames[:1], params["cnet"], config, config["context_norm"])
    del frames  # not needed by the updates (RAFT at 4K: 190 MiB)
    init = None if init_flow is None else _coarse_init(init_flow, pads, config["stride"])
    up = _refine(be, params, fmaps[:1], fmaps[1:], ctx, config, options, init)
    return be.crop(up, pads)


def forward_both(params, img0, img1, config, options):
    """Flows img0 -> img1 and img1 -> img0 in one pass: (fw, bw), each (H, W, 2) float32 px.

    Shared between the directions: the frame preparation and the feature encoder's pass
    over both frames (the one `forward` runs anyway). The context encoder sees both
    frames in one batch; each direction then has its own correlation and updates, as one
    batch of two where the backend says batches pay (`Backend.batch_passes`: a GPU) and
    the frames are below the size the encoders split at, else one direction after the
    other. Each direction equals `forward` on its pair (to float32 rounding).
    """
    be = backend_of(params)
    frames, pads = _prepare(be, img0, img1, config["stride"])
    fmaps = _encode(be, frames, params["fnet"], config, "instance")
    ctx = _encode(be, frames, params["cnet"], config, config["context_norm"])  # per frame, as `forward`
    if be.batch_passes and not _one_at_a_time(frames):
        up = _refine(be, params, fmaps, be.contiguous(fmaps[::-1]), ctx, config, options)
        fw, bw = up[:1], up[1:]
    else:
        fw = _refine(be, params, fmaps[:1], fmaps[1:], ctx[:1], config, options)
        bw = _refine(be, params, fmaps[1:], fmaps[:1], ctx[1:], config, options)
    return be.crop(fw, pads), be.crop(bw, pads)


# -- checkpoint layout -------------------------------------------------------------------
def _conv(shapes, key, o, i, kh, kw=None):
    shapes[f"{key}.weight"] = (o, i, kh, kh if kw is None else kw)
    shapes[f"{key}.bias"] = (o,)


def _bn(shapes, key, c, kind):
    if kind == "batch":
        for leaf in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{key}.{leaf}"] = (c,)
        shapes[f"{key}.num_batches_tracked"] = ()


def _encoder_shapes(shapes, key, config, out_dim, norm):
    stem = config["widths"][0]
    _conv(shapes, f"{key}.conv1", stem, 3, 7)
    _bn(shapes, f"{key}.norm1", stem, norm)
    cin = stem
    for (name, stride), planes in zip(_STAGES, config["widths"][1:]):
        for j in range(2):
            blk, s, i = f"{key}.{name}.{j}", stride if j == 0 else 1, cin if j == 0 else planes
            if config["block"] == "residual":
                convs = [("conv1", planes, i, 3), ("conv2", planes, planes, 3)]
            else:
                q = planes // 4
                convs = [("conv1", q, i, 1), ("conv2", q, q, 3), ("conv3", planes, q, 1)]
            for k, (cname, o, ci, kk) in enumerate(convs):
                _conv(shapes, f"{blk}.{cname}", o, ci, kk)
                _bn(shapes, f"{blk}.norm{k + 1}", o, norm)
            if s != 1:  # the shortcut's norm is registered twice: normN and downsample.1
                _bn(shapes, f"{blk}.norm{len(convs) + 1}", planes, norm)
                _conv(shapes, f"{blk}.downsample.0", planes, i, 1)
                _bn(shapes, f"{blk}.downsample.1", planes, norm)
        cin = planes
    _conv(shapes, f"{key}.conv2", out_dim, cin, 1)


def _update_shapes(shapes, key, config):
    levels, r, hd = config["corr_levels"], config["corr_radius"], config["hidden_dim"]
    cin = levels * (2 * r + 1) ** 2
    for j, c in enumerate(config["corr_convs"]):
        _conv(shapes, f"{key}.encoder.convc{j + 1}", c, cin, 1 if j == 0 else 3)
        cin = c
    f1, f2 = config["flow_convs"]
    _conv(shapes, f"{key}.encoder.convf1", f1, 2, 7)
    _conv(shapes, f"{key}.encoder.convf2", f2, f1, 3)
    _conv(shapes, f"{key}.encoder.conv", config["motion_dim"] - 2, cin + f2, 3)
    gin = hd + config["context_dim"] + config["motion_dim"]
    if config["gru"] == "separable":
        for g in ("z", "r", "q"):
            _conv(shapes, f"{key}.gru.conv{g}1", hd, gin, 1, 5)
            _conv(shapes, f"{key}.gru.conv{g}2", hd, gin, 5, 1)
    else:
        for g in ("z", "r", "q"):
            _conv(shapes, f"{key}.gru.conv{g}", hd, gin, 3)
    _conv(shapes, f"{key}.flow_head.conv1", config["head_dim"], hd, 3)
    _conv(shapes, f"{key}.flow_head.conv2", 2, config["head_dim"], 3)
    if config["upsample"] == "convex":
        s = config["stride"]
        _conv(shapes, f"{key}.mask.0", 256, hd, 3)
        _conv(shapes, f"{key}.mask.2", 9 * s * s, 256, 1)


def param_shapes(config):
    """{checkpoint key (no `module.`): shape} for every tensor of the release checkpoint."""
    shapes: dict = {}
    _encoder_shapes(shapes, "fnet", config, config["feature_dim"], "instance")
    _encoder_shapes(shapes, "cnet", config, config["hidden_dim"] + config["context_dim"],
                    config["context_norm"])
    _update_shapes(shapes, "update_block", config)
    return shapes


for _name, _ckpt in (("raft", "raft-things.pth"), ("raft-small", "raft-small.pth")):
    register(ModelDef(
        name=_name,
        family="raft",
        config=CONFIGS[_name],
        param_shapes=param_shapes,
        forward=forward,
        options=dict(OPTIONS),
        checkpoint=_ckpt,
        min_size=128,  # the 1/64-resolution pyramid level needs >= 2 px (the reference gives NaN)
        prepare_size=128,
        reuse_bytes=32 << 20,
        description=f"{'RAFT' if _name == 'raft' else 'RAFT-small'} (Teed & Deng 2020)",
        forward_both=forward_both,
        device_frames=True,
    ))
