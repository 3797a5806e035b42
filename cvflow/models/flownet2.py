"""FlowNet2 and its sub-networks as registered models (NVIDIA flownet2-pytorch layout).

Every model is a chain of FlowNet encoder-decoders (cvflow.models.flownet): the first
sees both frames, each later one also sees the second frame warped by the previous
flow, that flow (/20) and the brightness error |frame0 - warped|. `flownet2` adds
FlowNet-SD on the frames and a fusion net over both estimates.

Input protocol (the reference's): RGB, minus the per-channel mean over both frames,
/255. Frames are resized (bilinear) up to multiples of 64 and the flow is resized
back and rescaled per axis.
"""
from __future__ import annotations

from cvflow.backends import backend_of
from cvflow.models.base import ModelDef, register
from cvflow.models.flownet import FLOWNETC, FLOWNETS, FLOWNETSD, FUSION, flownet, param_shapes, stacked

DIV_FLOW = 20.0  # the nets predict flow / 20
RGB_MAX = 255.0
MULTIPLE = 64

_S_STACKED = stacked(FLOWNETS, 12)  # frames (6) + warped frame1 (3) + flow (2) + error (1)


def _chain_config(nets, upsample, fusion=False):
    """Config of a chain: nets = ((weight prefix or "", net config), ...); one upsample mode per net."""
    cfg = {"chain": tuple((prefix, net, mode) for (prefix, net), mode in zip(nets, upsample)), "fusion": None}
    if fusion:
        cfg["fusion"] = {"sd": ("flownets_d", FLOWNETSD), "net": ("flownetfusion", FUSION)}
    return cfg


_C = ("flownetc", FLOWNETC)
_S1 = ("flownets_1", _S_STACKED)
_S2 = ("flownets_2", _S_STACKED)
CONFIGS = {
    "flownet2-s": _chain_config([("", FLOWNETS)], ["bilinear"]),
    "flownet2-c": _chain_config([("", FLOWNETC)], ["bilinear"]),
    "flownet2-sd": _chain_config([("", FLOWNETSD)], ["bilinear"]),
    "flownet2-cs": _chain_config([_C, _S1], ["bilinear", "bilinear"]),
    "flownet2-css": _chain_config([_C, _S1, _S2], ["bilinear", "bilinear", "nearest"]),
    "flownet2": _chain_config([_C, _S1, _S2], ["bilinear", "bilinear", "nearest"], fusion=True),
}


def chain_param_shapes(config):
    """Every checkpoint key and shape of a chain config."""
    shapes = {}
    nets = [(prefix, net) for prefix, net, _ in config["chain"]]
    if config["fusion"] is not None:
        nets += [config["fusion"]["sd"], config["fusion"]["net"]]
    for prefix, net in nets:
        shapes.update(param_shapes(net, f"{prefix}." if prefix else ""))
    return shapes


def normalize(img0, img1, be=None):
    """BGR (H, W, 3) frames in 0..255 -> (1, H, W, 6) float32: RGB0, RGB1, mean-free, /255
    (on backend `be`; a CPU one when None). On the CUDA backend the frames come as `calc`
    uploaded them (uint8 or float32, BGR or gray: `ModelDef.device_frames`)."""
    return backend_of(be).mean_free_pair(img0, img1, RGB_MAX)


def _upsample4(be, flow, mode):
    n, h, w, _ = flow.shape
    if mode == "nearest":
        return be.upsample_nearest(flow, 4)
    return be.resize_bilinear(flow, 4 * h, 4 * w, align_corners=False)


def _error(be, x, flow):
    """Frame1 warped to frame0 by `flow` and the brightness error |frame0 - warped| (channel L2)."""
    warped = be.warp(x[..., 3:], flow, padding="border")
    return warped, be.brightness_error(x[..., :3], warped)


def _sub(params, prefix):
    return params[prefix] if prefix else params


def _chain(be, params, x, chain):
    """Run the chain on normalised frames x (1, H, W, 6); returns the full-resolution flow in px."""
    flow = None
    for prefix, net, mode in chain:
        inp = x
        if flow is not None:
            warped, err = _error(be, x, flow)
            inp = be.concat([x, warped, be.scale(flow, DIV_FLOW, divide=True), err])
        flow = _upsample4(be, be.scale(flownet(be, _sub(params, prefix), inp, net), DIV_FLOW), mode)
    return flow


def _fuse(be, params, x, flow_css, fusion):
    """FlowNet2's last stage: FlowNet-SD on the frames, then the fusion net over both flows."""
    sd_prefix, sd_net = fusion["sd"]
    # The reference divides (not multiplies) SD's output by div_flow here; kept for parity.
    flow_sd = flownet(be, _sub(params, sd_prefix), x, sd_net)
    flow_sd = be.upsample_nearest(be.scale(flow_sd, DIV_FLOW, divide=True), 4)
    _, err_sd = _error(be, x, flow_sd)
    _, err_css = _error(be, x, flow_css)
    inp = be.concat([x[..., :3], flow_sd, flow_css, be.channel_norm(flow_sd), be.channel_norm(flow_css),
                     err_sd, err_css])
    prefix, net = fusion["net"]
    return flownet(be, _sub(params, prefix), inp, net)


def predict(be, params, x, config):
    """Flow (N, H, W, 2) in px for normalised frame pairs x (N, H, W, 6), H and W multiples of 64."""
    flow = _chain(be, params, x, config["chain"])
    if config["fusion"] is not None:
        flow = _fuse(be, params, x, flow, config["fusion"])
    return flow


def resized_call(fn, x, multiple=MULTIPLE, be=None):
    """fn(x) on x resized up to multiples of `multiple`; the flow comes back at x's size.

    x: (N, H, W, C); fn maps (N, H', W', C) -> (N, H', W', 2) flow in px of the resized
    frames. Each flow axis is rescaled by the resize ratio of that axis. be: the backend
    that resizes (a CPU one when None).
    """
    be = backend_of(be)
    _, h, w, _ = x.shape
    h64, w64 = -(-h // multiple) * multiple, -(-w // multiple) * multiple
    if (h64, w64) == (h, w):
        return fn(x)
    flow = fn(be.resize_bilinear(x, h64, w64, align_corners=False))
    flow = be.resize_bilinear(flow, h, w, align_corners=False)
    return be.scale(flow, (w / w64, h / h64))


def forward(params, img0, img1, config, options, init_flow=None):
    """(H, W, 3) BGR frames in 0..255 (float32; on the CUDA backend also uint8 or gray, as
    uploaded) -> (H, W, 2) float32 flow in px."""
    be = backend_of(params)
    x = normalize(img0, img1, be)
    flow = resized_call(lambda t: predict(be, params, t, config), x, be=be)
    return be.xp.ascontiguousarray(flow[0], dtype=flow.dtype)


def forward_both(params, img0, img1, config, options):
    """Flows img0 -> img1 and img1 -> img0 as one batch of two: (fw, bw), each (H, W, 2).

    The input protocol is symmetric in the frames (one mean over both), so the swapped
    pair's input is the same tensor with its two frames' channels exchanged.
    """
    be = backend_of(params)
    x = normalize(img0, img1, be)
    x = be.concat([x, be.concat([x[..., 3:], x[..., :3]])], axis=0)
    flow = resized_call(lambda t: predict(be, params, t, config), x, be=be)
    return be.xp.ascontiguousarray(flow[0]), be.xp.ascontiguousarray(flow[1])


_RELEASES = {
    "flownet2": ("FlowNet2_checkpoint.pth.tar", "FlowNet2: FlowNetC, two FlowNetS, FlowNet-SD and fusion"),
    "flownet2-c": ("FlowNet2-C_checkpoint.pth.tar", "FlowNetC as trained for FlowNet2"),
    "flownet2-s": ("FlowNet2-S_checkpoint.pth.tar", "FlowNetS as trained for FlowNet2"),
    "flownet2-sd": ("FlowNet2-SD_checkpoint.pth.tar", "FlowNet-SD (small displacements)"),
    "flownet2-cs": ("FlowNet2-CS_checkpoint.pth.tar", "FlowNetC followed by one FlowNetS"),
    "flownet2-css": ("FlowNet2-CSS_checkpoint.pth.tar", "FlowNetC followed by two FlowNetS"),
}
_ALIASES = {"flownets": "flownet2-s", "flownetc": "flownet2-c"}  # the plain architectures

for _name in (*_RELEASES, *_ALIASES):
    _ckpt, _desc = _RELEASES[_ALIASES.get(_name, _name)]
    register(ModelDef(name=_name, family="flownet2", config=CONFIGS[_ALIASES.get(_name, _name)],
                      param_shapes=chain_param_shapes, forward=forward, checkpoint=_ckpt,
                      description=_desc + " (research use only)", reuse_bytes=1 << 20,
                      prepare_size=MULTIPLE, forward_both=forward_both, device_frames=True))
