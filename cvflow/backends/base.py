"""What every backend is: the device a model runs on, chosen once at `create()`.

A backend owns what is derived from the weights (prepared layers: transposed or
Winograd matrices, split GRU gates, kernel layouts), the workspace (activation arena,
scratch, memory pools: released by `release`, i.e. `collectGarbage`) and memoised
constants (interpolation matrices, pixel grids, masks). The user's weight dict is never
written. Models call ops on the backend (`be.conv2d(x, p, ...)`); `Backend` implements
every op by the generic array code of `cvflow.ops` (which runs on NumPy or CuPy arrays
alike), and the CPU and CUDA backends override the ops they do their own way.

`Params` is the nested weight dict a backend placed; it carries its backend, so model
functions keep the signature `forward(params, img0, img1, config, options, init_flow)`.
"""
from __future__ import annotations

import threading
from contextlib import nullcontext
from typing import Any, Mapping

import numpy as np

from cvflow.ops import act, attention, corr, frames, gru, matching, norm, sample, upsample, window
from cvflow.ops import conv as conv_ops
from cvflow.ops import depthwise as depthwise_ops
from cvflow.ops import conv_transpose as tconv_ops
from cvflow.ops import linear as linear_ops
from cvflow.ops import pool, posenc
from cvflow.ops.fold import fold_conv_bn
from cvflow.ops.pad import pad_to_multiple, unpad


class Params(dict):
    """Nested weights placed on a backend (`backend` attribute); a plain dict otherwise."""

    backend: "Backend"


def nest(flat: Mapping[str, Any]) -> dict:
    """{"a.b.weight": w} -> {"a": {"b": {"weight": w}}}; numeric parts stay strings ("layer1" -> {"0": ...})."""
    root: dict = {}
    for key, value in flat.items():
        node = root
        *path, leaf = key.split(".")
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = value
    return root


class Backend:
    """Generic ops over `xp` (NumPy or CuPy). Subclasses set `name` and `xp`."""

    name = "generic"
    xp = np
    precision = "fp32"  # numeric mode (cvflow.backends.PRECISIONS); only the CUDA backend has others
    # Whether independent passes of one call (calcBidirectional's two directions) should
    # run as one batch: yes where small maps leave the device idle (a GPU); the CPU
    # backend says no, as a batch's working set outgrows the cache there.
    batch_passes = True

    def __init__(self):
        self._prepared: dict = {}   # (id(layer dict), kind) -> (layer dict, derived)
        self._consts: dict = {}
        self._lock = threading.Lock()
        self._local = threading.local()  # per-thread memos of one forward pass

    # -- memory, placement, workspace ------------------------------------------------
    def asarray(self, host, dtype=np.float32):
        """A host array on this backend's device."""
        return self.xp.asarray(host, dtype=dtype)

    def to_host(self, x) -> np.ndarray:
        return x if isinstance(x, np.ndarray) else np.asarray(x)

    def place(self, flat: dict) -> Params:
        """{"a.b.weight": host array} -> nested `Params` on this device."""
        root = Params(nest({key: self.asarray(np.asarray(value, dtype=np.float32, order="C"))
                            for key, value in flat.items()}))
        root.backend = self
        return root

    def workspace(self):
        """Context of one forward pass (the CPU backend's arena); clears the pass's memos."""
        return _Pass(self, nullcontext())

    def detach(self, out):
        """A pass's result as an array that owns its memory (see the CPU backend's arena)."""
        return out

    def release(self) -> None:
        """Give back the memory kept between calls (`collectGarbage`)."""

    def float_output(self, out):
        """A pass's result (an array or a tuple of them) as float32: itself here; the CUDA
        backend's half storage converts (`cuda.precision`)."""
        return out

    def empty(self, shape, dtype=np.float32):
        return self.xp.empty(shape, dtype)

    def concat(self, parts, axis=-1):
        return self.xp.concatenate(parts, axis=axis)

    # Tokens per block of a Transformer's feed-forward network: its 4x-wide hidden layer
    # then stays in the CPU's cache (GELU several times faster); None: all at once.
    token_rows = 512

    # -- glue: frames in, shapes, element-wise arithmetic ----------------------------------
    # Named ops for what a model would otherwise write as array expressions: the CUDA
    # backend runs each as a kernel (a pass of executor calls only can be a CUDA graph).
    def frames(self, img0, img1, multiple=1, norm="signed", mean=None, std=None):
        """Two frames (H, W, 3) BGR or (H, W) gray, uint8 or float 0..255 -> ((2, H', W', 3)
        float32 RGB, pads): replicate-padded to multiples of `multiple` (pads = (top,
        bottom, left, right), `cvflow.ops.pad`) and normalised: norm "signed" 2 * (v / 255) - 1,
        "unit" v / 255, "mean_std" (v / 255 - mean) / std (per RGB channel)."""
        xp = self.xp
        if img0.ndim == 2:
            img0, img1 = (xp.repeat(x[:, :, None], 3, axis=2) for x in (img0, img1))
        frames = xp.stack([img0, img1])[..., ::-1]  # BGR -> RGB
        if norm == "signed":
            frames = 2 * (frames / xp.float32(255)) - 1
        elif norm == "unit":
            frames = frames / xp.float32(255)
        else:
            frames = (frames / xp.float32(255) - xp.asarray(mean, dtype=xp.float32)) / \
                xp.asarray(std, dtype=xp.float32)
        return pad_to_multiple(xp.ascontiguousarray(frames, dtype=xp.float32), multiple)

    def crop(self, x, pads):
        """(N, H', W', C) -> (H, W, C) of its first item, `pads` removed, contiguous."""
        return self.xp.ascontiguousarray(unpad(x, pads)[0])

    def contiguous(self, x):
        """x as a C-contiguous array (a copy of a view)."""
        return self.xp.ascontiguousarray(x)

    def add(self, a, b):
        return a + b

    def sub(self, a, b):
        return a - b

    def scale(self, x, s, divide=False):
        """x * s (x / s when divide), s rounded to x's dtype; s a number, or (sx, sy) for a
        flow (..., 2): dx scaled by sx, dy by sy."""
        if np.ndim(s):
            return x * self.xp.asarray(s, dtype=x.dtype)
        return x / x.dtype.type(s) if divide else x * x.dtype.type(s)

    def add_scaled(self, x, g, y):
        """x + g * y (g: per-channel vector)."""
        return x + g * y

    def add_bias_(self, x, b):
        """x += b (a vector of the last axis), in place; returns x."""
        x += b
        return x

    def fused(self):
        """Context of a block whose convolutions may hand their bias and ReLU to the next
        convolution (the CUDA backend's gathers); here: nothing changes."""
        return nullcontext()

    def coords_grid(self, n, h, w):
        """(n, h, w, 2) float32 pixel positions (x, y); never written by its users."""
        xp = self.xp
        ys, xs = xp.meshgrid(xp.arange(h, dtype=xp.float32), xp.arange(w, dtype=xp.float32), indexing="ij")
        return xp.broadcast_to(xp.stack([xs, ys], axis=-1), (n, h, w, 2)).copy()

    # -- memoisation ---------------------------------------------------------------------
    def prepared(self, layer: dict, kind: str, make):
        """make(), derived from `layer` (a weight dict) once per backend; the layer dict
        stays referenced so its id stays its own."""
        key = (id(layer), kind)
        hit = self._prepared.get(key)
        if hit is None:
            value = make()
            with self._lock:
                hit = self._prepared.setdefault(key, (layer, value))
        return hit[1]

    @property
    def prepared_count(self) -> int:
        return len(self._prepared)

    def const(self, key, make):
        """make() once per key (interpolation matrices, grids, masks): constants of shapes."""
        value = self._consts.get(key)
        if value is None:
            value = make()
            with self._lock:
                value = self._consts.setdefault(key, value)
        return value

    def memo(self):
        """This thread's memo dict for the current forward pass (see `workspace`)."""
        m = getattr(self._local, "memo", None)
        if m is None:
            m = self._local.memo = {}
        return m

    # -- convolutions --------------------------------------------------------------------
    def conv2d(self, x, p, stride=1, padding=0, dilation=1, act=None, slope=0.1):
        """(N, H, W, C) -> (N, Ho, Wo, O); p = {"weight": (O, C, kh, kw), "bias"}. See
        `cvflow.ops.conv.conv2d`; act: None, "relu" or "leaky"."""
        return conv_ops.conv2d(x, self.prepared(p, "conv", lambda: dict(p)), stride, padding, dilation,
                               act=act, slope=slope)

    def conv2d_(self, x, p, stride=1, padding=0, act=None):
        """conv2d(x, p, ...) where x is not used after: a backend may write the output over
        x's buffer (the CUDA backend does, for stride-1 'same' convolutions with as many
        outputs as inputs). Use the result, never x."""
        return self.conv2d(x, p, stride=stride, padding=padding, act=act)

    def conv_transpose2d(self, x, p, stride=1, padding=0, act=None, slope=0.1):
        return tconv_ops.conv_transpose2d(x, self.prepared(p, "conv", lambda: dict(p)), stride, padding,
                                          act=act, slope=slope)

    def same_conv(self, x, p, act=None):
        """Stride-1 convolution keeping H and W (odd kernels, zero padding k // 2)."""
        kh, kw = p["weight"].shape[2:]
        return self.conv2d(x, p, padding=(kh // 2, kw // 2), act=act)

    def depthwise_conv2d(self, x, p, padding=0):
        """(N, H, W, C) -> (N, Ho, Wo, C), stride 1, zero padding; p = {"weight": (C, 1, kh, kw),
        "bias"}. See `cvflow.ops.depthwise`."""
        return depthwise_ops.depthwise_conv2d(x, p, padding)

    def linear(self, x, p):
        return linear_ops.linear(x, p)

    # -- point-wise and normalisation ----------------------------------------------------
    def relu(self, x):
        return act.relu(x)

    def relu_(self, x):
        return act.relu_(x)

    def add_relu_(self, y, x):
        return act.add_relu_(y, x)

    def leaky_relu_(self, x, slope=0.1):
        return act.leaky_relu_(x, slope)

    def tanh(self, x):
        return act.tanh(x)

    def gelu(self, x):
        return act.gelu(x)

    def gelu_(self, x):
        """GELU of an array the caller no longer needs (may be written in place)."""
        return self.gelu(x)

    def instance_norm(self, x, relu=False, inplace=False, eps=1e-5):
        return norm.instance_norm(x, eps, relu=relu, inplace=inplace)

    def batch_norm_(self, x, p, relu=False, eps=1e-5):
        return norm.batch_norm_(x, p, eps, relu=relu)

    def layer_norm(self, x, p, eps=1e-5):
        return norm.layer_norm(x, p, eps)

    def channel_norm(self, x):
        return norm.channel_norm(x)

    def brightness_error(self, img0, warped):
        """FlowNet2's brightness error ||img0 - warped|| over channels, (N, H, W, 1); either
        may be a channel slice of a wider map."""
        return self.channel_norm(img0 - warped)

    def mean_free_pair(self, img0, img1, rgb_max=255.0):
        """FlowNet2's input protocol: BGR (H, W, 3) frames -> (1, H, W, 6), RGB of both
        frames minus their joint per-channel mean, / rgb_max (`cvflow.ops.frames`)."""
        return frames.mean_free_pair(img0, img1, rgb_max)

    # -- resampling ----------------------------------------------------------------------
    def resize_bilinear(self, x, out_h, out_w, align_corners):
        return upsample.resize_bilinear(x, out_h, out_w, align_corners)

    def upsample_nearest(self, x, factor):
        return upsample.upsample_nearest(x, factor)

    def convex_upsample(self, flow, mask, factor):
        return upsample.convex_upsample(flow, mask, factor)

    def warp(self, img, flow, padding="zeros"):
        """Backward warp, zeros outside (GMFlow) or border clamp (FlowNet2's Resample2d)."""
        return sample.warp(img, flow, padding)

    # -- correlation and matching --------------------------------------------------------
    def build_corr(self, fmap1, fmap2, levels, budget=1 << 30):
        return corr.build_corr(fmap1, fmap2, levels, budget)

    def corr_lookup(self, state, coords, radius):
        return corr.corr_lookup(state, coords, radius)

    def patch_correlation(self, f1, f2, max_displacement=20, stride=2):
        return corr.patch_correlation(f1, f2, max_displacement, stride)

    def attention(self, q, k, v, bias=None):
        return attention.attention(q, k, v, bias)

    def window_attention(self, q, k, v, splits, shift=False, mask=None):
        return window.window_attention(q, k, v, splits, shift=shift, mask=mask)

    def shifted_window_mask(self, h, w, splits):
        return self.const(("swin_mask", h, w, splits), lambda: window.shifted_window_mask(h, w, splits, self.xp))

    def local_attention(self, q, k, v, radius):
        return attention.local_attention(q, k, v, radius)

    def global_matching(self, f0, f1):
        return matching.global_matching(f0, f1)

    def local_matching(self, f0, f1, radius):
        return matching.local_matching(f0, f1, radius)

    def window_position(self, h, w, channels, splits):
        """GMFlow's sine encoding restarted in each of splits x splits windows, (H, W, C)."""
        def make():
            pos = posenc.sine_position(h // splits, w // splits, channels)
            return self.asarray(np.tile(pos, (splits, splits, 1)))
        return self.const(("window_position", h, w, channels, splits), make)

    # -- RAFT's recurrent unit -----------------------------------------------------------
    def conv_gru(self, h, x, p):
        """RAFT-small's ConvGRU: new state for state h (N, H, W, Ch) and input x, given as
        the list of the parts the reference concatenates ([context, motion])."""
        return gru.gru_cell(self, h, x, p, "")

    def sep_conv_gru(self, h, x, p):
        """RAFT's SepConvGRU (a 1x5 step, then a 5x1 step); x as in `conv_gru`."""
        return gru.gru_cell(self, gru.gru_cell(self, h, x, p, "1"), x, p, "2")

    def flow_head(self, net, p):
        """RAFT's FlowHead: conv2(relu(conv1(net))), (N, H, W, 2). When net just came out
        of a GRU whose next step convolves it with conv1's kernel (RAFT-small), conv1 and
        that step's h share are one convolution (`gru.head_with_h_share`)."""
        last = self.memo().get("gru_out")
        fused = gru.head_with_h_share(self, p["conv1"], last) if last is not None and last[0] is net else None
        if fused is None:
            return self.same_conv(self.same_conv(net, p["conv1"], act="relu"), p["conv2"])
        both_params, key = fused
        both = self.same_conv(net, both_params)
        split = p["conv1"]["weight"].shape[0]
        self.memo()[key] = (net, both[..., split:])
        return self.same_conv(self.relu_(both[..., :split]), p["conv2"])

    # -- NeuFlow v2: folded conv + BatchNorm, pooling, clamping ---------------------------
    def conv_bn(self, x, conv, bn, stride=1, padding=0, act=None, slope=0.1, eps=1e-5):
        """conv2d(x, conv) then inference BatchNorm `bn`, as one convolution whose weights
        fold the norm (`cvflow.ops.fold`): derived once per layer and held here, never
        written into the weight dict. act as in `conv2d`, after the norm."""
        def make():
            w, b = fold_conv_bn(conv["weight"], conv.get("bias"), bn, eps)
            return {"weight": self.asarray(w), "bias": self.asarray(b)}
        return self.conv2d(x, self.prepared(conv, f"conv_bn{eps}", make), stride, padding, act=act, slope=slope)

    def avg_pool2x2(self, x):
        """2x2 average pooling, stride 2, (N, H, W, C) -> (N, H//2, W//2, C)."""
        return pool.avg_pool2x2(x)

    def hardtanh(self, x, lo, hi):
        """min(max(x, lo), hi) as a new array (x may be a view)."""
        return self.xp.clip(x, x.dtype.type(lo), x.dtype.type(hi))


class _Pass:
    """`Backend.workspace()`: enter `inner`; on exit clear this thread's memos."""

    def __init__(self, be, inner):
        self.be, self.inner = be, inner

    def __enter__(self):
        return self.inner.__enter__()

    def __exit__(self, *exc):
        self.be._local.memo = None
        return self.inner.__exit__(*exc)
