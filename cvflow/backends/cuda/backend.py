"""The CUDA backend: every op of the ten models on an executor (`executor.py`).

One Python code path for both executors: CuPy on a GPU, and the CPU emulator of the same
`kernels/*.cu` sources in tests (`cvflow.testing.cuda_emulator()`). Convolutions,
normalisations (layer norm included), activations (GELU included), depthwise
convolutions, RAFT's correlation, FlowNet's patch correlation, warps and
upsampling run the hand-written kernels (`k_*.py` wrappers); matrix products go to
`ex.matmul` (cuBLAS; Linear layers too); RAFT's GRU gates are two kernels per cell
(`k_gru.py`); attention takes device-sized blocks of scores with its softmax, shifted
windows, GMFlow's matching and the Transformer models' glue (concatenation, sums,
frames) as kernels (`k_attention.py`, `k_tensor.py`); what is left is array glue on
`ex.xp`, the same expressions on CuPy and NumPy.

Prepared layers (weight matrices, batch-norm affines) are built once per layer on the
device and held here, never in the weight dict; `release` frees the executor's pools.
"""
from __future__ import annotations

import warnings

import numpy as np

from cvflow.backends.base import Backend
from cvflow.backends.cuda import (k_act, k_attention, k_conv, k_convnext, k_corr, k_gru, k_norm, k_patch_corr,
                                  k_tensor, k_upsample, k_warp)
from cvflow.ops import gru as gru_ops
from cvflow.backends.cuda.executor import launch_1d
from cvflow.ops.corr import corr_volume_bytes
from cvflow.ops.pad import pad_amounts


class GraphWarning(RuntimeWarning):
    """A pass could not be captured into a CUDA graph and runs eagerly."""


class CudaBackend(Backend):
    """Ops on executor `ex` (`get_executor()`): arrays of `ex.xp`, kernels by `ex.launch`."""

    name = "cuda"

    def __init__(self, ex):
        super().__init__()
        self.ex = ex
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

    # -- graphs ----------------------------------------------------------------------------
    def graphed(self, key, fn, *inputs):
        """fn(*inputs) -> device array, as a replayed graph: captured once per `key` (the
        caller's: input shapes and options) on static copies of the inputs, then each call
        copies its inputs into those buffers and replays. Returns the graph's static
        output: valid until the next call with the same key. Where the capture fails (the
        pass breaks a graph's rules), one warning, and fn runs eagerly from then on."""
        graphs = self.__dict__.setdefault("_graphs", {})
        entry = graphs.get(key)
        if entry is None:
            static = tuple(self.ex.empty(x.shape, x.dtype) for x in inputs)
            for dst, src in zip(static, inputs):
                dst[...] = src
            try:
                with self.ex.capture() as held:
                    out = fn(*static)
                entry = graphs[key] = (held.graph, static, out)
            except Exception as e:  # any capture failure: eager, said once
                entry = graphs[key] = None
                if not self.__dict__.get("_graph_warned"):
                    self._graph_warned = True
                    warnings.warn(f"CUDA graph capture failed, running eagerly ({type(e).__name__}: {e})",
                                  GraphWarning, stacklevel=2)
        if entry is None:
            return fn(*inputs)
        graph, static, out = entry
        for dst, src in zip(static, inputs):
            if src is not dst:
                dst[...] = src
        graph.replay()
        return out

    # -- convolutions (im2col kernel + product + fused bias/activation) ------------------
    def _conv_layer(self, p):
        return self.prepared(p, "cuda_conv", lambda: k_conv.prepare_conv(self.ex, p["weight"], p.get("bias")))

    def conv2d(self, x, p, stride=1, padding=0, dilation=1, act=None, slope=0.1):
        return k_conv.conv2d(self.ex, x, self._conv_layer(p), stride, padding, dilation, act=act, slope=slope)

    def conv_transpose2d(self, x, p, stride=1, padding=0, act=None, slope=0.1):
        layer = self.prepared(p, "cuda_tconv",
                              lambda: k_conv.prepare_conv_transpose(self.ex, p["weight"], p.get("bias")))
        return k_conv.conv_transpose2d(self.ex, x, layer, stride, padding, act=act, slope=slope)

    def depthwise_conv2d(self, x, p, padding=0):
        layer = self.prepared(p, "cuda_dw", lambda: k_convnext.prepare_depthwise(self.ex, p["weight"], p.get("bias")))
        return k_convnext.depthwise_conv2d(self.ex, x, layer, p, padding)

    def linear(self, x, p):
        layer = self.prepared(p, "cuda_linear", lambda: k_convnext.prepare_linear(self.ex, p["weight"], p.get("bias")))
        return k_convnext.linear(self.ex, x, layer)

    # -- point-wise and normalisation ----------------------------------------------------
    def gelu(self, x):
        return k_convnext.gelu(self.ex, x)

    def layer_norm(self, x, p, eps=1e-5):
        return k_convnext.layer_norm(self.ex, x, p["weight"], p["bias"], eps)

    def relu(self, x):
        return k_act.relu_(self.ex, k_tensor.copy(self.ex, x))

    def relu_(self, x):
        if not x.flags.c_contiguous:  # a view (RAFT's split head): glue, in place
            return self.xp.maximum(x, 0, out=x)
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

    # -- RAFT's recurrent unit: the gate arithmetic in two kernels per cell ------------------
    def _gru_step(self, xp, h, g, c, hzr, conv_q):
        return k_gru.gru_step(self.ex, h, g, c, hzr, conv_q)

    def conv_gru(self, h, x, p):
        return gru_ops.gru_cell(self, h, x, p, "", self._gru_step)

    def sep_conv_gru(self, h, x, p):
        return gru_ops.gru_cell(self, gru_ops.gru_cell(self, h, x, p, "1", self._gru_step), x, p, "2",
                                self._gru_step)

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

    # -- attention and matching: device-sized blocks, softmax and windows as kernels -------
    def attention(self, q, k, v, bias=None):
        return k_attention.attention(self.ex, q, k, v, bias)

    def window_attention(self, q, k, v, splits, shift=False, mask=None):
        if shift and mask is None:
            mask = self.shifted_window_mask(q.shape[1], q.shape[2], splits)
        return k_attention.window_attention(self.ex, q, k, v, splits, shift, mask)

    def global_matching(self, f0, f1):
        return k_attention.global_matching(self.ex, f0, f1)

    def local_attention(self, q, k, v, radius):
        corr = self.patch_correlation(q, k, radius, 1)
        return k_attention.local_attention(self.ex, corr, v, radius, q.shape[-1])

    def local_matching(self, f0, f1, radius):
        return k_attention.local_matching(self.ex, self.patch_correlation(f0, f1, radius, 1), radius, f0.shape[-1])

    # -- the Transformer models' array glue as kernels ----------------------------------------
    token_rows = None  # the feed-forward networks' tokens in one block

    def concat(self, parts, axis=-1):
        if any(p.dtype != np.float32 for p in parts):
            return self.xp.concatenate(parts, axis=axis)
        return k_tensor.concat(self.ex, parts, axis)

    def add(self, a, b):
        return k_tensor.add(self.ex, a, b)

    def scale(self, a, alpha):
        return k_tensor.scale(self.ex, a, alpha)

    def channels(self, x, start, stop):
        return k_tensor.channels(self.ex, x, start, stop)

    def gelu_(self, x):
        if not x.flags.c_contiguous:
            return self.gelu(x)
        launch_1d(self.ex, "act:gelu", x.size, x, np.int32(x.size))
        return x

    def hardtanh(self, x, lo, hi):
        return k_tensor.clamp(self.ex, x, lo, hi)

    def upsample_nearest(self, x, factor):
        return k_tensor.upsample_nearest(self.ex, x, factor)

    def frames(self, img0, img1, multiple=1, norm="signed", mean=None, std=None):
        """One kernel per frame (float32 frames; `Backend.frames`' pads and norms)."""
        h, w = img0.shape[:2]
        pads = pad_amounts(h, w, multiple)
        if norm == "signed":  # 2 * (v / 255) - 1 = (v / 255 - 0.5) / 0.5 exactly
            mean, std = (0.5,) * 3, (0.5,) * 3
        elif norm == "unit":
            mean, std = (0.0,) * 3, (1.0,) * 3
        return k_tensor.normalize_frames(self.ex, [img0, img1], pads, mean, std), pads

    def crop(self, x, pads):
        x = x[0:1]
        return (x if not any(pads) else k_tensor.crop(self.ex, x, pads))[0]

    # -- NeuFlow v2 ----------------------------------------------------------------------
    def avg_pool2x2(self, x):
        """2x2 average pooling on the pyramid's pooling kernel (kernels/pool.cu)."""
        return k_corr.pool_pyramid(self.ex, x, 2)[1]
