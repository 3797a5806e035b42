"""Half-precision storage on the CUDA backend (issue 20): kernels/dtype.h's types as arrays,
the conversion kernels (kernels/convert.cu) and the entry-point suffix of a typed kernel.

Storage dtypes: float32 ("fp32", "tf32"), float16 ("fp16": binary16), and uint16 holding
bfloat16 bit patterns ("bf16": neither NumPy nor CuPy has a bfloat16 dtype). A typed
kernel `file:name` has the entry points `name` (float32), `name_f16` and `name_bf16`;
`kernel(name, x)` picks the one of x's dtype. Conversions to half round to nearest even,
as the device's cvt.rn; back to float32 they are exact.
"""
from __future__ import annotations

import numpy as np

from cvflow.backends.cuda.executor import contiguous, i32, launch_1d
from cvflow.backends.cuda.rounding import bf16_bits, bf16_float  # noqa: F401  (host side, for tests and weights)
from cvflow.errors import DeviceError

STORAGE = {"fp32": np.float32, "tf32": np.float32, "fp16": np.float16, "bf16": np.uint16}
_SUFFIX = {np.dtype(np.float32): "", np.dtype(np.float16): "_f16", np.dtype(np.uint16): "_bf16"}
_NAME = {"": "f32", "_f16": "f16", "_bf16": "bf16"}


def suffix(x) -> str:
    """The entry-point suffix of an array's storage dtype ("", "_f16", "_bf16")."""
    s = _SUFFIX.get(np.dtype(x.dtype))
    if s is None:
        raise DeviceError(f"no kernel storage type for dtype {x.dtype} (float32, float16, or uint16 bfloat16 bits)")
    return s


def storage(x):
    """The storage dtype a kernel reads x as: x's own when it is half storage, else float32
    (other dtypes are converted, as the float32 wrappers always did)."""
    return x.dtype if np.dtype(x.dtype) in (np.float16, np.uint16) else np.dtype(np.float32)


def kernel(name: str, x) -> str:
    """`name` ("file:function") typed for x's storage dtype."""
    return name + suffix(x)


def to_storage(ex, x, precision: str):
    """float32 x (device) -> a C-contiguous array of `precision`'s storage dtype (x itself
    when it already is one)."""
    want = np.dtype(STORAGE[precision])
    x = contiguous(ex, x, x.dtype)
    if x.dtype == want:
        return x
    if x.dtype != np.float32:
        x = to_float(ex, x)
    out = ex.empty(x.shape, want)
    launch_1d(ex, f"convert:f32_to_{_NAME[_SUFFIX[want]]}", x.size, x, out, i32(x.size))
    return out


def to_float(ex, x):
    """Half storage (device) -> float32, exactly; float32 passes unchanged."""
    s = suffix(x)
    if not s:
        return x
    x = contiguous(ex, x, x.dtype)
    out = ex.empty(x.shape, np.float32)
    launch_1d(ex, f"convert:{_NAME[s]}_to_f32", x.size, x, out, i32(x.size))
    return out


_MODE = {"": "fp32", "_f16": "fp16", "_bf16": "bf16"}


def like(ex, a, x):
    """Device array `a` in the storage dtype of `x` (a itself when it already is)."""
    if a.dtype == x.dtype:
        return a
    return to_storage(ex, to_float(ex, a), _MODE[suffix(x)])


def avg_pool2x2(ex, x):
    """2x2 average pooling (kernels/pool.cu) of (N, H, W, C) in x's storage dtype."""
    x = contiguous(ex, x, storage(x))
    n, h, w, c = x.shape
    y = ex.empty((n, h // 2, w // 2, c), x.dtype)
    launch_1d(ex, kernel("pool:avg_pool2x2", x), y.size, x, y, i32(n), i32(h), i32(w), i32(c))
    return y
