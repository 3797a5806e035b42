"""Point-wise activations on the CUDA backend (kernels/act.cu), in place.

Same results as cvflow/ops/act.py: ReLU is x > 0 ? x : 0, LeakyReLU max(x, slope*x).
Arrays: C-contiguous executor arrays of any shape, float32 or half storage (`k_dtype`: the
kernel of x's storage dtype; a bias or a summand is converted to it, arithmetic in float32).
"""
from __future__ import annotations

from cvflow.backends.cuda.executor import f32, i32, launch_1d
from cvflow.backends.cuda.k_dtype import kernel, like
from cvflow.errors import InputError

_ACTS = {None: 0, "relu": 1, "leaky": 2}


def act_code(act):
    """Kernel code of an activation name (None, "relu", "leaky")."""
    if act not in _ACTS:
        raise InputError(f"`act` must be None, 'relu' or 'leaky', got {act!r}")
    return _ACTS[act]


def bias_act_(ex, x, bias=None, act=None, slope=0.1):
    """x (..., C) += bias (C,) then the activation, in place; returns x."""
    code = act_code(act)
    if bias is None and code == 0:
        return x
    channels = x.shape[-1] if x.ndim else 1
    has_bias = bias is not None
    launch_1d(ex, kernel("act:bias_act", x), x.size, x, like(ex, bias, x) if has_bias else x, i32(x.size),
              i32(channels), i32(has_bias), i32(code), f32(slope))
    return x


def relu_(ex, x):
    """In-place ReLU of x; returns x."""
    return bias_act_(ex, x, None, "relu")


def leaky_relu_(ex, x, slope=0.1):
    """In-place LeakyReLU (0 <= slope <= 1) of x; returns x."""
    return bias_act_(ex, x, None, "leaky", slope)


def add_relu_(ex, y, x):
    """y = relu(y + x) in place on y; x C-contiguous of y's shape. Returns y."""
    launch_1d(ex, kernel("act:add_relu", y), y.size, y, like(ex, x, y), i32(y.size))
    return y
