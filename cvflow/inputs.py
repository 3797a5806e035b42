"""What `calc` and `create` accept, checked at the entry point: frames (2-D gray or
(H, W, 3) BGR, uint8 or finite float), the output flow, and model options (known keys,
each coerced to its default's type). Messages name the argument, its shape and dtype."""
from __future__ import annotations

import numbers
from typing import Any, Mapping

import numpy as np

from cvflow.arrays import get_xp
from cvflow.errors import CvflowTypeError, InputError
from cvflow.models.base import ModelDef


def describe(a) -> str:
    shape = getattr(a, "shape", None)
    dtype = getattr(a, "dtype", None)
    if shape is None:
        return type(a).__name__
    return f"shape {tuple(shape)} {dtype}"


def check_frame(name: str, img) -> None:
    what = f"`{name}` must be a 2-D or 3-D uint8/float array (H x W gray or H x W x 3 BGR)"
    if img is None or not hasattr(img, "shape") or not hasattr(img, "dtype"):
        raise InputError(f"{what}, got {describe(img)}")
    kind = img.dtype.kind
    bad_shape = img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3) or 0 in img.shape
    if bad_shape or kind not in "uif" or (kind in "iu" and img.dtype != np.uint8):
        raise InputError(f"{what}, got {describe(img)}")
    if kind == "f" and not bool(get_xp(img).isfinite(img).all()):
        raise InputError(f"`{name}` contains NaN or Inf ({describe(img)})")


def check_output_flow(flow) -> None:
    """A `flow` argument that `calc` would fill in place must be writable: say so before
    the forward pass, not after it (NumPy's "assignment destination is read-only")."""
    flags = getattr(flow, "flags", None)
    if flags is not None and getattr(flags, "writeable", True) is False:
        raise InputError(f"`flow` is read-only ({describe(flow)}), so calc cannot fill it in place; "
                         "pass a writable array (flow.copy()) or None")


def unit_range(img0, img1):
    """(lo, hi) when both frames are float with every value in 0..1, else None."""
    if img0.dtype.kind != "f" or img1.dtype.kind != "f":
        return None
    xp = get_xp(img0)
    lo = float(min(xp.min(img0), xp.min(img1)))
    hi = float(max(xp.max(img0), xp.max(img1)))
    return (lo, hi) if 0.0 <= lo and 0.0 < hi <= 1.0 else None


def as_uploaded(img):
    """A validated frame as a model with `device_frames` takes it: uint8 stays uint8 (the
    upload is a quarter of float32's), other dtypes become float32; gray stays (H, W)."""
    if img.dtype == np.uint8 or img.dtype == np.float32:
        return img
    return img.astype(np.float32)  # float64 / int frames: converted where they are


def to_bgr_float(img, be):
    """A frame as (H, W, 3) float32 on the backend's device."""
    img = be.asarray(img, dtype=img.dtype)
    if img.ndim == 2:
        img = be.xp.repeat(img[:, :, None], 3, axis=2)
    return be.asarray(img)


def snake(name: str) -> str:
    """A cv2 accessor's tail to an option key: "WarmStart" -> "warm_start"."""
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i:
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


def camel(name: str) -> str:
    """An option key to a cv2 accessor's tail: "warm_start" -> "WarmStart"."""
    return "".join(part.capitalize() for part in name.split("_"))


def check_options(model: ModelDef, options: Mapping[str, Any], base=None) -> dict:
    """`base` (default: the model's default options) updated with `options`, each checked
    and coerced to its default's type; unknown keys name the model's options."""
    out = dict(model.options if base is None else base)
    for key, value in options.items():
        if key not in model.options:
            raise InputError(unknown_option(model, key))
        out[key] = coerce_option(key, value, model.options[key])
    return out


def unknown_option(model: ModelDef, key) -> str:
    valid = ", ".join(sorted(model.options)) or "none"
    return f"model {model.name!r} has no option {key!r}; its options: {valid}"


def coerce_option(key, value, default):
    if isinstance(default, bool):
        if not isinstance(value, (bool, np.bool_)):
            raise CvflowTypeError(f"option {key!r} must be a bool, got {value!r}")
        return bool(value)
    if isinstance(default, numbers.Integral):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise CvflowTypeError(f"option {key!r} must be an int, got {value!r}")
        if value < 1:
            raise InputError(f"option {key!r} must be >= 1, got {value}")
        return int(value)
    if isinstance(default, numbers.Real):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise CvflowTypeError(f"option {key!r} must be a number, got {value!r}")
        return float(value)
    return value
