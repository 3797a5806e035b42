"""The CUDA backend: every op of the ten models on an executor (`executor.py`).

One Python code path for both executors: CuPy on a GPU, and the CPU emulator of the same
`kernels/*.cu` sources in tests (`cvflow.testing.cuda_emulator()`). Convolutions,
normalisations (layer norm included), activations (GELU included), depthwise
convolutions, RAFT's correlation, FlowNet's patch correlation, warps and
upsampling run the hand-written kernels (`k_*.py` wrappers); matrix products go to
`ex.matmul` (cuBLAS; Linear layers too); RAFT's GRU gates are two kernels per cell
(`k_gru.py`); what is left (attention's softmax, reshapes) is array glue on `ex.xp`, the
same expressions on CuPy and NumPy.

Prepared layers (weight matrices, batch-norm affines) are built once per layer on the
device and held here, never in the weight dict; `release` frees the executor's pools.
"""
from __future__ import annotations

import contextlib
import functools
from dataclasses import replace

import numpy as np

from cvflow.backends.base import Backend
from cvflow.backends.cuda import (k_act, k_conv, k_convnext, k_corr, k_dtype, k_frames, k_glue, k_gru, k_norm,
                                  k_patch_corr, k_upsample, k_warp)
from cvflow.backends.cuda.graphs import GraphOps, GraphWarning  # noqa: F401  (GraphWarning: public here)
from cvflow.backends.cuda.precision import HalfStorage
from cvflow.backends.cuda.transformer_ops import TransformerOps
from cvflow.errors import InputError
from cvflow.ops import gru as gru_ops
from cvflow.ops.corr import corr_volume_bytes
from cvflow.ops.pad import pad_amounts, unpad


class CudaBackend(GraphOps, TransformerOps, Backend):
    """Ops on executor `ex` (`get_executor()`): arrays of `ex.xp`, kernels by `ex.launch`.
    precision "fp16" / "bf16" makes the half-storage backend (`precision.HalfStorage`)."""

    name = "cuda"
    storage = np.dtype(np.float32)  # activations' storage type (half: `precision.HalfStorage`)

    def __new__(cls, ex=None, precision="fp32"):
        if precision in ("fp16", "bf16") and not issubclass(cls, HalfStorage):
            cls = _half_class(cls)
        return super().__new__(cls)

    def __init__(self, ex, precision="fp32"):
        super().__init__()
        if precision not in ("fp32", "tf32", "fp16", "bf16"):
            raise InputError(f"`precision` must be one of 'fp32', 'tf32', 'fp16', 'bf16', got {precision!r}")
        self.precision = precision
        if isinstance(self, HalfStorage):
            self._half_init()
        # The executor with this backend's math mode bound to its products (TF32: its own
        # cuBLAS handle), so objects of different precisions share one device.
        self.ex = ex.with_math(precision)
        self.xp = ex.xp

    # -- memory -----------------------------------------------------------------------
    def asarray(self, host, dtype=np.float32):
        return self.ex.asarray(host, dtype)

    def to_host(self, x) -> np.ndarray:
        return np.asarray(self.ex.to_host(x))

    def empty(self, shape, dtype=np.float32):
        return self.ex.empty(shape, dtype)

    def release(self) -> None:
        self.ex.free_all()

    def synchronize(self) -> None:
        self.ex.synchronize()

    # -- glue as kernels (k_glue.py): frames in, views, concatenation, arithmetic ----------
    def frames(self, img0, img1, multiple=1, norm="signed", mean=None, std=None):
        """The frames as uploaded (uint8 or float32, BGR or gray) -> (2, H', W', 3) float32,
        pads: one kernel (pads, normalisation as `Backend.frames`)."""
        pads = pad_amounts(img0.shape[0], img0.shape[1], multiple)
        key = ("mean_std", tuple(mean or (0.0,) * 3), tuple(std or (1.0,) * 3))
        ms = self.const(key, lambda: self.asarray(np.asarray(key[1] + key[2], np.float32)))
        mode = "mean_std" if norm not in ("signed", "unit") else norm
        return k_glue.frames(self.ex, img0, img1, pads, mode, ms, dtype=self.storage), pads

    def crop(self, x, pads):
        return k_glue.copy(self.ex, unpad(x, pads)[0])

    def contiguous(self, x):
        return x if x.flags.c_contiguous else k_glue.copy(self.ex, x)

    def concat(self, parts, axis=-1):
        if self._fusing() and axis in (-1, 3) and all(isinstance(p, (list, k_conv.Pending)) or p.ndim == 4
                                                      for p in parts):
            return [q for p in parts for q in (p if isinstance(p, list) else [p])]  # built by its consumer
        parts = [q for p in parts for q in (p if isinstance(p, list) else [p])]
        parts = [k_act.bias_act_(self.ex, p.raw, p.bias, p.act) if isinstance(p, k_conv.Pending) else p
                 for p in parts]  # a pending output made real: its epilogue over its own fresh buffer
        if any(p.dtype != parts[0].dtype for p in parts) or parts[0].dtype not in (np.float32, np.float16, np.uint16):
            return self.xp.concatenate(parts, axis=axis)  # mixed or other dtypes: NumPy's promotion
        return k_glue.concat(self.ex, parts, axis)

    def add(self, a, b):
        return k_glue.binary(self.ex, a, b, "add")

    def sub(self, a, b):
        return k_glue.binary(self.ex, a, b, "sub")

    def scale(self, x, s, divide=False):
        return k_glue.scale(self.ex, x, s, divide)

    def add_scaled(self, x, g, y):
        return k_glue.add_scaled(self.ex, x, g, y)

    def add_bias_(self, x, b):
        return k_act.bias_act_(self.ex, x, b)

    def coords_grid(self, n, h, w):
        """A constant of the shape, uploaded once."""
        def make():
            ys, xs = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
            return self.asarray(np.broadcast_to(np.stack([xs, ys], axis=-1), (n, h, w, 2)))
        return self.const(("coords_grid", n, h, w), make)

    def tanh(self, x):
        return k_glue.copy(self.ex, x, act="tanh")

    # -- convolutions (im2col kernel + product + fused bias/activation) ------------------
    def _held_once(self, p, layer):
        """Each weight once on the device: the placed weight (O, I, kh, kw) (or (I, O, kh,
        kw) transposed) becomes a view of the prepared matrix, which holds the same numbers
        in im2col's order, and the prepared bias is the placed one. Only for placed float32
        device weights of the matrix's exact size; otherwise both copies stay."""
        w, b, m = p.get("weight"), p.get("bias"), layer.mat
        xp = self.xp
        if not (isinstance(w, xp.ndarray) and isinstance(m, xp.ndarray) and w.dtype == m.dtype == np.float32
                and w.flags.c_contiguous and m.flags.c_contiguous and w.size == m.size):
            return layer
        i, o, kh, kw = layer.in_channels, layer.out_channels, layer.kh, layer.kw
        if layer.transposed:  # mat (I, kh*kw*O) = w.transpose(0, 2, 3, 1)
            view = m.reshape(i, kh, kw, o).transpose(0, 3, 1, 2)
        else:                 # mat (kh*kw*I, O) = w.transpose(2, 3, 1, 0)
            view = m.reshape(kh, kw, i, o).transpose(3, 2, 0, 1)
        if view.shape != w.shape:
            return layer
        p["weight"] = view
        if isinstance(b, xp.ndarray) and b.dtype == np.float32 and b.flags.c_contiguous and b.shape == (o,):
            layer.bias = b
        return layer

    def _conv_layer(self, p):
        return self.prepared(p, "cuda_conv", lambda: self._held_once(
            p, k_conv.prepare_conv(self.ex, p["weight"], p.get("bias"))))

    def conv2d(self, x, p, stride=1, padding=0, dilation=1, act=None, slope=0.1):
        """x: an array, a Pending output, or a list of them (their channel concatenation,
        never built). Inside `fused()`, a bias and ReLU are left pending for the consumer."""
        layer = self._conv_layer(p)
        parts = x if isinstance(x, list) else [x]
        plain = len(parts) == 1 and not isinstance(parts[0], k_conv.Pending)
        defer = self._fusing() and act in (None, "relu") and (layer.bias is not None or act)
        if plain and not defer and (parts[0].flags.c_contiguous or parts[0].ndim != 4):
            return k_conv.conv2d(self.ex, parts[0], layer, stride, padding, dilation, act=act, slope=slope)
        if plain and parts[0].flags.c_contiguous:  # keeps the 1x1 straight-to-product path
            raw = k_conv.conv2d(self.ex, parts[0], replace(layer, bias=None), stride, padding, dilation)
        else:
            raw = k_conv.conv2d_parts(self.ex, parts, layer, stride, padding, dilation)
        if defer:
            return k_conv.Pending(raw, layer.bias, act)
        return k_act.bias_act_(self.ex, raw, layer.bias, act, slope)

    def conv2d_(self, x, p, stride=1, padding=0, act=None):
        """`Backend.conv2d_`: the output over x's buffer (`k_conv.conv2d_`)."""
        if stride != 1 or not (x.flags.c_contiguous and x.ndim == 4) or self._fusing():
            return self.conv2d(x, p, stride=stride, padding=padding, act=act)
        return k_conv.conv2d_(self.ex, x, self._conv_layer(p), padding, act=act)

    @contextlib.contextmanager
    def fused(self):
        """Inside, convolutions with a bias and/or ReLU return `k_conv.Pending` and `concat`
        a list of parts: the epilogues and concatenations happen in the consuming
        convolution's gather (RAFT's update: no bias/ReLU pass, no concatenation)."""
        was = self._fusing()
        self._local.fusing = True
        try:
            yield
        finally:
            self._local.fusing = was

    def _fusing(self):
        return getattr(self._local, "fusing", False)

    def conv_transpose2d(self, x, p, stride=1, padding=0, act=None, slope=0.1):
        layer = self.prepared(p, "cuda_tconv", lambda: self._held_once(
            p, k_conv.prepare_conv_transpose(self.ex, p["weight"], p.get("bias"))))
        return k_conv.conv_transpose2d(self.ex, x, layer, stride, padding, act=act, slope=slope)

    def depthwise_conv2d(self, x, p, padding=0):
        layer = self.prepared(p, "cuda_dw", lambda: k_convnext.prepare_depthwise(self.ex, p["weight"], p.get("bias")))
        return k_convnext.depthwise_conv2d(self.ex, x, layer, p, padding)

    def linear(self, x, p):
        """x (..., I) @ W.T + b -> (..., O): one product, then the bias kernel; any storage."""
        layer = self.prepared(p, "cuda_linear", lambda: k_convnext.prepare_linear(self.ex, p["weight"], p.get("bias")))
        wt = layer["wt"]
        flat = (x if x.flags.c_contiguous else k_glue.copy(self.ex, x)).reshape(-1, wt.shape[0])
        out = k_act.bias_act_(self.ex, self.ex.matmul(flat, wt), layer["bias"])
        return out.reshape(*x.shape[:-1], wt.shape[1])

    # -- point-wise and normalisation ----------------------------------------------------
    def gelu(self, x):
        return k_convnext.gelu(self.ex, x)

    def layer_norm(self, x, p, eps=1e-5):
        return k_convnext.layer_norm(self.ex, x, p["weight"], p["bias"], eps)

    def relu(self, x):
        return k_glue.copy(self.ex, x, act="relu")

    def relu_(self, x):
        if not x.flags.c_contiguous:  # a view (RAFT's split head): the strided copy over itself
            return k_glue.copy(self.ex, x, out=x, act="relu")
        return k_act.relu_(self.ex, x)

    def leaky_relu_(self, x, slope=0.1):
        if not x.flags.c_contiguous:
            return self.xp.maximum(x, x * x.dtype.type(slope), out=x)
        return k_act.leaky_relu_(self.ex, x, slope)

    def add_relu_(self, y, x):
        if not y.flags.c_contiguous:
            y += x
            return self.relu_(y)
        return k_act.add_relu_(self.ex, y, self.xp.ascontiguousarray(x))

    def instance_norm(self, x, relu=False, inplace=False, eps=1e-5):
        return k_norm.instance_norm(self.ex, x, eps, relu=relu, inplace=inplace and x.flags.c_contiguous)

    def batch_norm_(self, x, p, relu=False, eps=1e-5):
        scale, shift = self.prepared(p, f"cuda_bn{eps}", lambda: k_norm.batch_norm_affine(self.ex, p, eps))
        if not x.flags.c_contiguous:
            x *= scale
            x += shift
            return self.relu_(x) if relu else x
        return k_norm.batch_norm_(self.ex, x, scale, shift, relu)

    def channel_norm(self, x):
        return k_norm.channel_norm(self.ex, x)

    def brightness_error(self, img0, warped):
        return k_norm.channel_norm_diff(self.ex, img0, warped)

    def mean_free_pair(self, img0, img1, rgb_max=255.0):
        return k_frames.mean_free_pair(self.ex, img0, img1, rgb_max, dtype=self.storage)

    # -- RAFT's recurrent unit: the gate arithmetic in two kernels per cell ------------------
    def _gru_step(self, xp, h, g, c, hzr, conv_q):
        return k_gru.gru_step(self.ex, h, g, c, hzr, conv_q)

    def conv_gru(self, h, x, p):
        return self._gru_cell(h, x, p, "")

    def sep_conv_gru(self, h, x, p):
        return self._gru_cell(self._gru_cell(h, x, p, "1"), x, p, "2")

    def flow_head(self, net, p):
        """`Backend.flow_head` with conv1's bias and ReLU applied in conv2's gather; for
        RAFT-small, conv1 fused with the next GRU step's h share (`gru.head_with_h_share`),
        the split read through views (no copies)."""
        last = self.memo().get("gru_out")
        fused = gru_ops.head_with_h_share(self, p["conv1"], last) if last is not None and last[0] is net else None
        l1, l2 = self._conv_layer(p["conv1"]), self._conv_layer(p["conv2"])
        if fused is None:
            hidden = k_conv.Pending(self._raw_same_conv(net, l1), l1.bias, "relu")
        else:
            both_params, key = fused
            both = self._raw_same_conv(net, self._conv_layer(both_params))  # the h share's bias is 0
            split = l1.out_channels
            self.memo()[key] = (net, both[..., split:])
            hidden = k_conv.Pending(both[..., :split], l1.bias, "relu")
        raw = k_conv.conv2d_parts(self.ex, [hidden], l2, padding=(l2.kh // 2, l2.kw // 2))
        return k_act.bias_act_(self.ex, raw, l2.bias)

    def _raw_same_conv(self, x, layer):
        return k_conv.conv2d(self.ex, x, replace(layer, bias=None), padding=(layer.kh // 2, layer.kw // 2))

    def _gru_cell(self, h, x, p, sfx):
        """`gru.gru_cell` on this backend: the input x = [context, motion] with motion an
        array, Pending or a list of parts; the state's z, r share and the motion's share of
        z, r, q are one product of [h, motion] (gather of the parts, epilogues applied),
        unless the flow head already gave the h share (RAFT-small)."""
        ch = h.shape[-1]
        cc = x[0].shape[-1] if len(x) > 1 else 0
        parts = gru_ops.cell_parts(self, p, sfx, ch, cc)
        memo = self.memo()
        if cc:
            key = ("gru_c", sfx, id(parts))
            hit = memo.get(key)
            if hit is None or hit[0] is not x[0]:
                const = self.add_bias_(self.same_conv(x[0], parts["c"]), parts["bias"])
                hit = memo[key] = (x[0], const.reshape(-1, 3 * ch))
            c = hit[1]
        else:
            c = parts["bias"][None]
        m = x[-1] if isinstance(x[-1], list) else [x[-1]]
        hit = memo.pop(("h_zr", sfx, id(parts)), None)
        lx = self._conv_layer(parts["x"])
        pad = (lx.kh // 2, lx.kw // 2)
        if hit is not None and hit[0] is h:
            g = k_conv.conv2d_parts(self.ex, m, lx, padding=pad)
            hzr = hit[1].reshape(-1, 2 * ch)
        else:
            hx = self.prepared(parts["x"], "cuda_gru_hx", lambda: self._hx_layer(parts, ch))
            g = k_conv.conv2d_parts(self.ex, [h, *m], hx, padding=pad)
            hzr = None
        lq = self._conv_layer(parts["h_q"])
        out = k_gru.gru_step(self.ex, h, g.reshape(-1, 3 * ch), c, hzr,
                             lambda rh: self._raw_same_conv(rh, lq).reshape(-1, ch))
        memo["gru_out"] = (out, p, sfx, ch, cc)
        return out

    def _hx_layer(self, parts, ch):
        """The [h, motion] -> (z, r, q) convolution: h's z, r rows, zeros for q."""
        wh = np.asarray(self.to_host(parts["h_zr"]["weight"]), np.float32)
        wx = np.asarray(self.to_host(parts["x"]["weight"]), np.float32)
        w = np.zeros((3 * ch, ch + wx.shape[1]) + wx.shape[2:], np.float32)
        w[:2 * ch, :ch] = wh
        w[:, ch:] = wx
        return k_conv.prepare_conv(self.ex, w)

    # -- resampling ----------------------------------------------------------------------
    def _interp_table(self, n_in, n_out, align_corners):
        key = ("interp", n_in, n_out, bool(align_corners))
        return self.const(key, lambda: k_upsample._table(self.ex, n_in, n_out, align_corners))

    def resize_bilinear(self, x, out_h, out_w, align_corners):
        """Interpolation tables are constants of the shapes: uploaded once per backend."""
        return k_upsample.resize_bilinear(self.ex, x, out_h, out_w, align_corners, self._interp_table)

    def convex_upsample(self, flow, mask, factor):
        return k_upsample.convex_upsample(self.ex, flow, mask, factor)

    def warp(self, img, flow, padding="zeros"):
        if padding == "border":
            return k_warp.resample2d(self.ex, img, flow)
        return k_warp.bilinear_warp_zeros(self.ex, img, flow)

    # -- correlation and matching --------------------------------------------------------
    def build_corr(self, fmap1, fmap2, levels, budget=1 << 30):
        """RAFT's correlation state: the all-pairs pyramid when it fits in `budget` bytes,
        else the pooled second feature maps (each lookup takes its own dot products)."""
        n, h, w, _ = fmap1.shape
        if corr_volume_bytes(n, h, w, levels) <= budget:
            return {"volumes": k_corr.corr_pyramid(self.ex, fmap1, fmap2, levels)}
        return {"volumes": None, "f1": fmap1, "pyramid": k_corr.pool_pyramid(self.ex, fmap2, levels)}

    def corr_lookup(self, state, coords, radius):
        if state["volumes"] is not None:
            return k_corr.corr_lookup(self.ex, state["volumes"], coords, radius)
        return k_corr.corr_lookup_on_the_fly(self.ex, state["f1"], state["pyramid"], coords, radius)

    def patch_correlation(self, f1, f2, max_displacement=20, stride=2):
        return k_patch_corr.patch_correlation(self.ex, f1, f2, max_displacement, stride)

    # -- NeuFlow v2 ----------------------------------------------------------------------
    def avg_pool2x2(self, x):
        """2x2 average pooling (kernels/pool.cu), in x's storage type (`k_dtype`)."""
        return k_dtype.avg_pool2x2(self.ex, x)


@functools.lru_cache(maxsize=None)
def _half_class(cls):
    """`cls` with half storage at its ops' boundary (`precision.HalfStorage`)."""
    return type(f"Half{cls.__name__}", (HalfStorage, cls), {})
