"""Point-wise activations (float32 in, float32 out)."""
from __future__ import annotations

import math

import numpy as np

from cvflow.arrays import get_xp
from cvflow.ops.parallel import map_spans

try:  # a runtime dependency; bench/gpu_check.sh may run where only NumPy and CuPy are
    import cv2
except ImportError:
    cv2 = None

_PIECE = 1 << 19  # elements per in-place piece: 2 MiB of float32, cache-resident


def relu(x):
    xp = get_xp(x)
    if xp is np and x.dtype == np.float32:
        return relu_(np.array(x, order="C"))  # a copy, then the fast in-place path
    return xp.maximum(x, 0, dtype=x.dtype)


def relu_(x):
    """In-place ReLU for buffers the caller owns. NumPy float32: cv2.threshold (SIMD and
    threaded; NumPy's maximum against a scalar is several times slower)."""
    xp = get_xp(x)
    if xp is np and cv2 is not None and x.dtype == np.float32 and x.flags.c_contiguous and x.size:
        flat = x.reshape(1, -1) if x.ndim < 2 else x.reshape(-1, x.shape[-1])
        cv2.threshold(flat, 0, 0, cv2.THRESH_TOZERO, dst=flat)  # x > 0 ? x : 0, in place
        return x
    return xp.maximum(x, 0, out=x)


def add_relu_(y, x):
    """y = relu(y + x) in place on y (owned by the caller); x of y's shape. One pass over
    memory, in cache-sized pieces shared among threads."""
    xp = get_xp(y)
    if not (y.flags.c_contiguous and x.flags.c_contiguous):
        y += x
        return relu_(y)
    yf, xf = y.reshape(-1), x.reshape(-1)

    def piece(a, b):
        t = yf[a:b]
        t += xf[a:b]
        relu_(t)

    map_spans(piece, yf.size, xp=xp)
    return y


def leaky_relu(x, slope=0.1):
    xp = get_xp(x)
    return xp.where(x > 0, x, x * x.dtype.type(slope))


def leaky_relu_(x, slope=0.1):
    """In-place LeakyReLU for buffers the caller owns; 0 <= slope <= 1 (then it is
    max(x, slope*x)). Contiguous buffers go in cache-sized pieces with one piece-sized
    temporary, not a temporary as large as x."""
    xp = get_xp(x)
    s = x.dtype.type(slope)
    if not x.flags.c_contiguous:
        return xp.maximum(x, x * s, out=x)
    flat = x.reshape(-1)
    step = _PIECE
    scaled = xp.empty(min(step, flat.size), x.dtype)
    for a in range(0, flat.size, step):
        piece = flat[a:a + step]
        xp.multiply(piece, s, out=scaled[:piece.size])
        xp.maximum(piece, scaled[:piece.size], out=piece)
    return x


def sigmoid(x):
    xp = get_xp(x)
    # 0.5*(1+tanh(x/2)) never overflows, unlike 1/(1+exp(-x)).
    out = xp.tanh(x * x.dtype.type(0.5))
    out += 1
    out *= x.dtype.type(0.5)
    return out


def tanh(x):
    return get_xp(x).tanh(x)


def tanh_(x):
    """In-place tanh for buffers the caller owns."""
    return get_xp(x).tanh(x, out=x)


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
