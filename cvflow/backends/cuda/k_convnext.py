"""ConvNeXt-block ops on the CUDA backend (SEA-RAFT's update): depthwise convolution
(kernels/depthwise.cu), channels-last LayerNorm (kernels/layer_norm.cu), exact GELU
(kernels/act.cu) and Linear layers (a cuBLAS product, then the bias kernel).

Same results as cvflow/ops/depthwise.py, ops/norm.py layer_norm, ops/act.py gelu and
ops/linear.py, within float32 rounding. Arrays: float32 on the executor, NHWC; the
depthwise convolution and the LayerNorm also take half storage (`k_dtype`: weights are
converted to x's storage type).
"""
from __future__ import annotations

import numpy as np

from cvflow.backends.cuda import k_glue
from cvflow.backends.cuda.executor import contiguous, f32, i32, launch_1d
from cvflow.backends.cuda.k_act import bias_act_
from cvflow.backends.cuda.k_dtype import kernel, like, storage
from cvflow.ops.depthwise import check_depthwise


def prepare_depthwise(ex, weight, bias):
    """PyTorch (C, 1, kh, kw) weight -> {"taps": (kh, kw, C), "bias": (C,) or None, "shape"}."""
    w = np.asarray(ex.to_host(weight), dtype=np.float32)
    taps = np.ascontiguousarray(w[:, 0].transpose(1, 2, 0))
    b = None if bias is None else ex.asarray(np.asarray(ex.to_host(bias), dtype=np.float32))
    return {"taps": ex.asarray(taps), "bias": b, "shape": w.shape}


def depthwise_conv2d(ex, x, layer, p, padding=0):
    """x (N, H, W, C) -> (N, Ho, Wo, C): stride 1, zero `padding`, the prepared `layer`
    (`prepare_depthwise` of p)."""
    ph, pw = check_depthwise(x, p, padding)
    x = contiguous(ex, x, storage(x))
    n, h, w, c = x.shape
    kh, kw = layer["shape"][2:]
    ho, wo = h + 2 * ph - kh + 1, w + 2 * pw - kw + 1
    out = ex.empty((n, ho, wo, c), x.dtype)
    taps = like(ex, layer["taps"], x)
    bias = None if layer["bias"] is None else like(ex, layer["bias"], x)
    launch_1d(ex, kernel("depthwise:depthwise_conv2d", x), out.size, x, taps, taps if bias is None else bias,
              out, i32(n), i32(h), i32(w), i32(c), i32(kh), i32(kw), i32(ph), i32(pw), i32(ho), i32(wo),
              i32(bias is not None))
    return out


def layer_norm(ex, x, weight, bias, eps=1e-5):
    """LayerNorm over the last axis of x (..., C) with affine weight and bias (C,)."""
    x = contiguous(ex, x, storage(x))
    c = x.shape[-1]
    out = ex.empty(x.shape, x.dtype)
    weight, bias = (like(ex, contiguous(ex, a), x) for a in (weight, bias))
    launch_1d(ex, kernel("layer_norm:layer_norm_last", x), x.size // c, x, weight, bias, out,
              i32(x.size // c), i32(c), f32(eps))
    return out


def gelu(ex, x):
    """Exact (erf) GELU of x, a new array."""
    out = k_glue.copy(ex, x)  # a kernel, not an array op: a pass stays capturable
    launch_1d(ex, kernel("act:gelu", out), out.size, out, i32(out.size))
    return out


def prepare_linear(ex, weight, bias):
    """nn.Linear's (O, I) weight -> {"wt": (I, O) contiguous, "bias": (O,) or None}."""
    w = np.asarray(ex.to_host(weight), dtype=np.float32)
    b = None if bias is None else ex.asarray(np.asarray(ex.to_host(bias), dtype=np.float32))
    return {"wt": ex.asarray(np.ascontiguousarray(w.T)), "bias": b}


def linear(ex, x, layer):
    """x (..., I) @ W.T + b -> (..., O): one product over all leading positions."""
    wt = layer["wt"]
    lead = x.shape[:-1]
    out = ex.matmul(contiguous(ex, x).reshape(-1, wt.shape[0]), wt)
    out = bias_act_(ex, ex.xp.ascontiguousarray(out), layer["bias"])
    return out.reshape(*lead, wt.shape[1])
