"""The FlowNet encoder-decoder (FlowNetS, FlowNetC, FlowNet-SD, FlowNet2's fusion net).

One definition, four configs. The encoder is a list of conv + LeakyReLU(0.1) layers;
FlowNetC runs its first layers on each frame separately and joins them with a patch
correlation. The decoder walks back up from the coarsest map: at each level it
predicts a flow, upsamples it and the features (transposed convs), and concatenates
both with the encoder's skip map of the next finer level. Weight keys follow the
NVIDIA flownet2-pytorch release (`conv1.0.weight`, `deconv5.0.bias`, `predict_flow6.weight`).
"""
from __future__ import annotations

SLOPE = 0.1

# (name, out_channels, kernel, stride); padding is (kernel - 1) // 2 throughout.
_DEEP = (
    ("conv4", 512, 3, 2), ("conv4_1", 512, 3, 1),
    ("conv5", 512, 3, 2), ("conv5_1", 512, 3, 1),
    ("conv6", 1024, 3, 2), ("conv6_1", 1024, 3, 1),
)
_S_ENCODER = (
    ("conv1", 64, 7, 2), ("conv2", 128, 5, 2), ("conv3", 256, 5, 2), ("conv3_1", 256, 3, 1),
) + _DEEP
_SD_HEAD = (
    ("conv0", 64, 3, 1), ("conv1", 64, 3, 2), ("conv1_1", 128, 3, 1),
    ("conv2", 128, 3, 2), ("conv2_1", 128, 3, 1),
)
_SD_ENCODER = _SD_HEAD + (("conv3", 256, 3, 2), ("conv3_1", 256, 3, 1)) + _DEEP

# Configs. `decoder`: deconv widths, coarse to fine (also the inter_conv widths);
# `siamese`: leading layers run per frame before the correlation (FlowNetC).
FLOWNETS = {
    "in_channels": 6, "encoder": _S_ENCODER, "siamese": 0, "correlation": None,
    "decoder": (512, 256, 128, 64), "inter_conv": False, "upsample_bias": False,
}
FLOWNETC = {
    "in_channels": 3, "encoder": _S_ENCODER, "siamese": 3,
    "correlation": {"max_displacement": 20, "stride": 2, "redirect": 32},
    "decoder": (512, 256, 128, 64), "inter_conv": False, "upsample_bias": True,
}
FLOWNETSD = {
    "in_channels": 6, "encoder": _SD_ENCODER, "siamese": 0, "correlation": None,
    "decoder": (512, 256, 128, 64), "inter_conv": True, "upsample_bias": True,
}
FUSION = {
    "in_channels": 11, "encoder": _SD_HEAD, "siamese": 0, "correlation": None,
    "decoder": (32, 16), "inter_conv": True, "upsample_bias": True,
}


def stacked(net, in_channels):
    """The same net reading `in_channels` input channels (FlowNet2's refinement FlowNetS)."""
    return {**net, "in_channels": in_channels}


def _corr_channels(cfg):
    c = cfg["correlation"]
    d = 2 * (c["max_displacement"] // c["stride"]) + 1
    return c["redirect"] + d * d


def _encoder_plan(cfg):
    """[(name, in_ch, out_ch, kernel, stride, level)] with level = log2 of the map's stride."""
    plan, ch, level = [], cfg["in_channels"], 0
    for i, (name, out, k, s) in enumerate(cfg["encoder"]):
        if cfg["correlation"] is not None and i == cfg["siamese"]:
            ch = _corr_channels(cfg)
        level += s == 2
        plan.append((name, ch, out, k, s, level))
        ch = out
    return plan


def _decoder_plan(cfg):
    """[(level, in_ch, skip_ch, deconv_width)] from the coarsest level down, and the last level."""
    plan = _encoder_plan(cfg)
    skip_ch = {}
    for name, _, out, _, _, level in plan:
        skip_ch[level] = out  # the last map of each level is its skip
    top = plan[-1][5]
    steps, ch = [], plan[-1][2]
    for i, width in enumerate(cfg["decoder"]):
        level = top - i
        steps.append((level, ch, skip_ch[level - 1], width))
        ch = skip_ch[level - 1] + width + 2
    return steps, top - len(cfg["decoder"]), ch


def param_shapes(cfg, prefix=""):
    """{checkpoint key: shape} of one encoder-decoder; keys get `prefix` prepended."""
    shapes = {}

    def add(name, w, bias=True):
        shapes[f"{prefix}{name}.weight"] = tuple(w)
        if bias:
            shapes[f"{prefix}{name}.bias"] = (w[1] if name.startswith(("deconv", "upsampled")) else w[0],)

    for name, cin, out, k, _, _ in _encoder_plan(cfg):
        add(f"{name}.0", (out, cin, k, k))
    if cfg["correlation"] is not None:
        siamese_out = cfg["encoder"][cfg["siamese"] - 1][1]
        add("conv_redir.0", (cfg["correlation"]["redirect"], siamese_out, 1, 1))
    steps, last, ch = _decoder_plan(cfg)
    for i, (level, cin, _, width) in enumerate(steps):
        pred_in = cin
        if cfg["inter_conv"] and i > 0:
            add(f"inter_conv{level}.0", (steps[i - 1][3], cin, 3, 3))
            pred_in = steps[i - 1][3]
        add(f"predict_flow{level}", (2, pred_in, 3, 3))
        add(f"upsampled_flow{level}_to_{level - 1}", (2, 2, 4, 4), bias=cfg["upsample_bias"])
        add(f"deconv{level - 1}.0", (cin, width, 4, 4))
    pred_in = ch
    if cfg["inter_conv"]:
        add(f"inter_conv{last}.0", (steps[-1][3], ch, 3, 3))
        pred_in = steps[-1][3]
    add(f"predict_flow{last}", (2, pred_in, 3, 3))
    return shapes


def _conv_block(be, x, p, k, s):
    """conv (bias) + LeakyReLU(0.1): the reference's `conv(batchNorm=False, ...)`."""
    return be.conv2d(x, p["0"], stride=s, padding=(k - 1) // 2, act="leaky", slope=SLOPE)


def _encode(be, p, x, cfg):
    """Run the encoder; returns the coarsest map and {level: skip map}."""
    plan = _encoder_plan(cfg)
    skips = {}
    n_siam = cfg["siamese"] if cfg["correlation"] is not None else 0
    if n_siam:
        cin, n = cfg["in_channels"], x.shape[0]
        # Both frames through the shared layers in one batch: first frames, then second ones.
        feats = be.concat([x[..., :cin], x[..., cin:]], axis=0)
        for name, _, _, k, s, level in plan[:n_siam]:
            feats = _conv_block(be, feats, p[name], k, s)
            skips[level] = feats[:n]
        fa, fb = feats[:n], feats[n:]
        c = cfg["correlation"]
        corr = be.leaky_relu_(be.patch_correlation(fa, fb, c["max_displacement"], c["stride"]), SLOPE)
        redir = _conv_block(be, fa, p["conv_redir"], 1, 1)
        x = be.concat([redir, corr])
    for name, _, _, k, s, level in plan[n_siam:]:
        x = _conv_block(be, x, p[name], k, s)
        skips[level] = x
    return x, skips


def _predict(be, p, feat, level, inter):
    if inter:
        feat = be.conv2d(feat, p[f"inter_conv{level}"]["0"], padding=1)
    return be.conv2d(feat, p[f"predict_flow{level}"], padding=1)


def flownet(be, p, x, cfg):
    """One encoder-decoder pass on backend `be`.

    p: nested weights of this net; x: (N, H, W, in_channels) with H, W multiples of
    2**levels (64 for FlowNetS/C/SD). Returns the finest predicted flow, (N, H/4, W/4, 2)
    for FlowNetS/C/SD and (N, H, W, 2) for the fusion net, in the net's own units.
    """
    feat, skips = _encode(be, p, x, cfg)
    steps, last, _ = _decoder_plan(cfg)
    for i, (level, _, _, _) in enumerate(steps):
        flow = _predict(be, p, feat, level, cfg["inter_conv"] and i > 0)
        up = be.conv_transpose2d(flow, p[f"upsampled_flow{level}_to_{level - 1}"], stride=2, padding=1)
        dec = be.conv_transpose2d(feat, p[f"deconv{level - 1}"]["0"], stride=2, padding=1, act="leaky",
                                  slope=SLOPE)
        feat = be.concat([skips[level - 1], dec, up])
    return _predict(be, p, feat, last, cfg["inter_conv"])
