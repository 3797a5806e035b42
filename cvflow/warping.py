"""Backward warping of an image by a flow field (OpenCV ``remap``, bilinear): `cvflow.warp`.

The module is `cvflow.warping` so that the name `cvflow.warp` is only ever the function
(a submodule `cvflow.warp` would replace it as an attribute of the package once imported)."""

import cv2
import numpy as np

from cvflow.errors import InputError
from cvflow.io.flo import check_flow_array

__all__ = ["warp"]

_BORDERS = {"replicate": cv2.BORDER_REPLICATE, "constant": cv2.BORDER_CONSTANT}
_REMAP_DTYPES = (np.uint8, np.uint16, np.int16, np.float32, np.float64)
_MAX_SIDE = 32767  # cv2.remap needs every side < SHRT_MAX
_CHUNK = 4  # channels per remap call (OpenCV's fast paths handle up to 4)


def _check_image(image):
    try:
        img = np.asarray(image)
    except (TypeError, ValueError) as e:
        raise InputError(f"image must be an array: {e}") from None
    if img.ndim not in (2, 3) or img.dtype not in _REMAP_DTYPES or min(img.shape) < 1:
        names = ", ".join(np.dtype(d).name for d in _REMAP_DTYPES)
        raise InputError(
            f"image must be (H, W) or (H, W, C) with dtype one of {names}; "
            f"got shape {img.shape} dtype {img.dtype}"
        )
    return img


def warp(image, flow, border="replicate"):
    """Backward-warp ``image`` by ``flow``: ``out[y, x] = image[y + flow_y, x + flow_x]``.

    Bilinear interpolation via ``cv2.remap``. Note that OpenCV quantises the
    sub-pixel weights to 1/32 px for non-float32 images.

    Args:
        image: (H, W) or (H, W, C) array of dtype uint8, uint16, int16, float32 or float64.
        flow: (H, W, 2) real-valued flow in px, ``flow[y, x] = (dx, dy)``.
        border: ``"replicate"`` (nearest edge pixel) or ``"constant"`` (zeros) for
            samples outside the image.

    Returns:
        Array with ``image``'s shape and dtype. Pixels whose flow is non-finite are 0.
    """
    img = _check_image(image)
    f = check_flow_array(flow)
    if f.shape[:2] != img.shape[:2]:
        raise InputError(
            f"image and flow sizes differ: image shape {img.shape} vs flow shape {f.shape}"
        )
    if border not in _BORDERS:
        raise InputError(f"border must be one of {sorted(_BORDERS)}, got {border!r}")
    h, w = img.shape[:2]
    if max(h, w) >= _MAX_SIDE:
        raise InputError(f"image of shape {img.shape} too large for cv2.remap (sides < {_MAX_SIDE})")

    finite = np.isfinite(f).all(axis=2)
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    # Non-finite targets are parked far outside and zeroed afterwards; coordinates are
    # clipped because remap saturates them to int16 internally anyway.
    map_x = np.where(finite, gx + np.where(finite, f[..., 0], 0), -_MAX_SIDE)
    map_y = np.where(finite, gy + np.where(finite, f[..., 1], 0), -_MAX_SIDE)
    map_x = np.clip(map_x, -_MAX_SIDE, _MAX_SIDE).astype(np.float32)
    map_y = np.clip(map_y, -_MAX_SIDE, _MAX_SIDE).astype(np.float32)

    def remap(plane):
        out = cv2.remap(np.ascontiguousarray(plane), map_x, map_y, cv2.INTER_LINEAR,
                        borderMode=_BORDERS[border], borderValue=0)
        return out.reshape(plane.shape)  # cv2 drops a trailing singleton channel

    if img.ndim == 2 or img.shape[2] <= _CHUNK:
        out = remap(img)
    else:
        out = np.concatenate(
            [remap(img[..., c:c + _CHUNK]) for c in range(0, img.shape[2], _CHUNK)], axis=2
        )
    out[~finite] = 0
    return out
