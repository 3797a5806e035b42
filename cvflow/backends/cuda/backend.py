"""The CUDA backend: every op of the ten models on an executor (`executor.py`).

One Python code path for both executors: CuPy on a GPU, and the CPU emulator of the same
`kernels/*.cu` sources in tests (`cvflow.testing.cuda_emulator()`). Convolutions,
normalisations, activations, RAFT's correlation, FlowNet's patch correlation, warps and
upsampling run the hand-written kernels (`k_*.py` wrappers); matrix products go to
`ex.matmul` (cuBLAS); what is left (GRU gate arithmetic, attention's softmax, layer norm,
GELU, reshapes) is array glue on `ex.xp`, the same expressions on CuPy and NumPy.

Prepared layers (weight matrices, batch-norm affines) are built once per layer on the
device and held here, never in the weight dict; `release` frees the executor's pools.
"""
from __future__ import annotations

import numpy as np

from cvflow.backends.base import Backend
from cvflow.backends.cuda import k_act, k_conv, k_corr, k_norm, k_patch_corr, k_upsample, k_warp
from cvflow.ops import attention as attention_ops
from cvflow.ops import matching as matching_ops
from cvflow.ops.corr import corr_volume_bytes


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

    # -- convolutions (im2col kernel + product + fused bias/activation) ------------------
    def _conv_layer(self, p):
        return self.prepared(p, "cuda_conv", lambda: k_conv.prepare_conv(self.ex, p["weight"], p.get("bias")))

    def conv2d(self, x, p, stride=1, padding=0, dilation=1, act=None, slope=0.1):
        return k_conv.conv2d(self.ex, x, self._conv_layer(p), stride, padding, dilation, act=act, slope=slope)

    def conv_transpose2d(self, x, p, stride=1, padding=0, act=None, slope=0.1):
        layer = self.prepared(p, "cuda_tconv",
                              lambda: k_conv.prepare_conv_transpose(self.ex, p["weight"], p.get("bias")))
        return k_conv.conv_transpose2d(self.ex, x, layer, stride, padding, act=act, slope=slope)

    # -- point-wise and normalisation ----------------------------------------------------
    def relu(self, x):
        return k_act.relu_(self.ex, self.xp.array(x, order="C"))

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

    # -- resampling ----------------------------------------------------------------------
    def resize_bilinear(self, x, out_h, out_w, align_corners):
        return k_upsample.resize_bilinear(self.ex, x, out_h, out_w, align_corners)

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

    def local_attention(self, q, k, v, radius):
        return attention_ops.local_attention(q, k, v, radius, correlate=self.patch_correlation)

    def local_matching(self, f0, f1, radius):
        return matching_ops.local_matching(f0, f1, radius, correlate=self.patch_correlation)

    # -- NeuFlow v2 ----------------------------------------------------------------------
    def avg_pool2x2(self, x):
        """2x2 average pooling on the pyramid's pooling kernel (kernels/pool.cu)."""
        return k_corr.pool_pyramid(self.ex, x, 2)[1]
