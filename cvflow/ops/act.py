"""Point-wise activations (float32 in, float32 out)."""
from __future__ import annotations

import math

from cvflow.backend import get_xp


def relu(x):
    xp = get_xp(x)
    return xp.maximum(x, 0, dtype=x.dtype)


def relu_(x):
    """In-place ReLU for buffers the caller owns."""
    xp = get_xp(x)
    return xp.maximum(x, 0, out=x)


def leaky_relu(x, slope=0.1):
    xp = get_xp(x)
    return xp.where(x > 0, x, x * x.dtype.type(slope))


def leaky_relu_(x, slope=0.1):
    """In-place LeakyReLU for buffers the caller owns; 0 <= slope <= 1 (then it is max(x, slope*x))."""
    xp = get_xp(x)
    return xp.maximum(x, x * x.dtype.type(slope), out=x)


def sigmoid(x):
    xp = get_xp(x)
    # 0.5*(1+tanh(x/2)) never overflows, unlike 1/(1+exp(-x)).
    out = xp.tanh(x * x.dtype.type(0.5))
    out += 1
    out *= x.dtype.type(0.5)
    return out


def tanh(x):
    return get_xp(x).tanh(x)


def erf(x):
    """Error function, Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7, float32 rounding level)."""
    xp = get_xp(x)
    t = 1.0 / (1.0 + 0.3275911 * xp.abs(x))
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    y = 1.0 - poly * xp.exp(-x * x)
    return xp.copysign(y, x).astype(x.dtype, copy=False)


def gelu(x):
    """Exact (erf) GELU, as torch.nn.GELU()."""
    return x * (0.5 * (1.0 + erf(x * x.dtype.type(1 / math.sqrt(2)))))
