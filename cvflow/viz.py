"""Flow visualisation with the Middlebury colour wheel (Baker et al., IJCV 2011).

Hue encodes direction, saturation encodes magnitude: zero flow is white, flow of
the normalising radius is the fully saturated wheel colour, and flow beyond it is
darkened to 75 % (as in the Middlebury reference code).
"""

import numpy as np

from cvflow.errors import InputError
from cvflow.io.flo import check_flow_array

__all__ = ["flow_to_color", "flow_panel", "make_colorwheel", "uncertainty_to_color"]

# Colour-wheel segments (55 hues in all): per segment its length and, for R, G, B,
# whether the channel is full (1), empty (0), ramping up ("+") or down ("-").
_SEGMENTS = (
    (15, (1, "+", 0)),  # red -> yellow
    (6, ("-", 1, 0)),  # yellow -> green
    (4, (0, 1, "+")),  # green -> cyan
    (11, (0, "-", 1)),  # cyan -> blue
    (13, ("+", 0, 1)),  # blue -> magenta
    (6, (1, 0, "-")),  # magenta -> red
)
_EPS = 1e-5  # keeps all-zero flow from dividing by zero
_OUT_OF_RANGE_SCALE = 0.75


def make_colorwheel():
    """Return the (55, 3) float64 Middlebury colour wheel, RGB in 0..255."""
    segments = []
    for n, pattern in _SEGMENTS:
        ramp = np.floor(255.0 * np.arange(n) / n)  # floor(255 * i / n), i = 0..n-1
        channel = {0: np.zeros(n), 1: np.full(n, 255.0), "+": ramp, "-": 255.0 - ramp}
        segments.append(np.stack([channel[c] for c in pattern], axis=1))
    return np.concatenate(segments, axis=0)


_WHEEL = make_colorwheel()


def _wheel_colors(u, v):
    """Map normalised flow (u, v) (arrays, finite) to RGB floats in [0, 1]."""
    n = _WHEEL.shape[0]
    rad = np.hypot(u, v)
    # Angle measured from -x as in the reference code (flow (1, 0) maps to red).
    a = np.arctan2(-v, -u) / np.pi  # in [-1, 1]
    fk = (a + 1.0) / 2.0 * (n - 1)
    k0 = np.floor(fk).astype(np.int64)
    k1 = np.where(k0 + 1 == n, 0, k0 + 1)
    f = (fk - k0)[..., None]
    col = ((1.0 - f) * _WHEEL[k0] + f * _WHEEL[k1]) / 255.0
    inside = (rad <= 1.0)[..., None]
    saturated = 1.0 - rad[..., None] * (1.0 - col)
    return np.where(inside, saturated, col * _OUT_OF_RANGE_SCALE)


def _check_max_flow(max_flow):
    try:
        m = float(max_flow)
    except (TypeError, ValueError):
        m = float("nan")
    if isinstance(max_flow, bool) or not (np.isfinite(m) and m > 0):
        raise InputError(f"max_flow must be a positive finite number or None, got {max_flow!r}")
    return m


def flow_to_color(flow, max_flow=None, convert_to_bgr=True):
    """Colour-code a flow field with the Middlebury wheel.

    Args:
        flow: (H, W, 2) real-valued array, ``flow[y, x] = (dx, dy)`` in px.
        max_flow: radius (px) mapped to full saturation; flow longer than it is
            darkened (x0.75). Default: the largest finite flow magnitude.
        convert_to_bgr: True (default) returns **BGR**, ready for ``cv2.imwrite`` /
            ``cv2.imshow``; False returns RGB (e.g. for matplotlib).

    Returns:
        (H, W, 3) uint8. Zero flow is white; unknown flow is black: non-finite, or
        (Middlebury's convention, as its ``color_flow``) |u| or |v| > 1e9. The default
        scale is taken from the known pixels only.
    """
    from cvflow.metrics import known_flow

    arr = check_flow_array(flow).astype(np.float64)
    if max_flow is not None:
        max_flow = _check_max_flow(max_flow)
    finite = known_flow(arr)
    arr[~finite] = 0.0
    if max_flow is None:
        mag = np.hypot(arr[..., 0], arr[..., 1])  # hypot: no overflow
        max_flow = float(mag.max())
    arr /= float(max_flow) + _EPS
    rgb = np.floor(255.0 * _wheel_colors(arr[..., 0], arr[..., 1])).astype(np.uint8)
    rgb[~finite] = 0
    return rgb[..., ::-1].copy() if convert_to_bgr else rgb


def _image_to_bgr_u8(image):
    """Gray/BGR image (uint8, or float in 0..255) -> (H, W, 3) uint8 BGR."""
    try:
        img = np.asarray(image)
    except (TypeError, ValueError) as e:
        raise InputError(f"image must be an array: {e}") from None
    ok_shape = img.ndim == 2 or (img.ndim == 3 and img.shape[2] in (1, 3))
    if not ok_shape or img.dtype.kind not in "uf" or (img.dtype.kind == "u" and img.dtype != np.uint8):
        raise InputError(
            "image must be (H, W), (H, W, 1) or (H, W, 3) BGR, uint8 or float in 0..255; "
            f"got shape {img.shape} dtype {img.dtype}"
        )
    if img.dtype.kind == "f":
        img = np.clip(np.nan_to_num(img), 0, 255).round().astype(np.uint8)
    if img.ndim == 2:
        img = img[..., None]
    return np.broadcast_to(img, img.shape[:2] + (3,))


def flow_panel(image, flow, max_flow=None):
    """Side-by-side ``image | flow_to_color(flow)`` panel.

    Args:
        image: (H, W), (H, W, 1) or (H, W, 3) BGR; uint8, or float in 0..255 (clipped).
        flow: (H, W', 2) flow; its height must equal the image's.
        max_flow: as in :func:`flow_to_color`.

    Returns:
        (H, W + W', 3) uint8 BGR.
    """
    img = _image_to_bgr_u8(image)
    arr = check_flow_array(flow)
    if img.shape[0] != arr.shape[0]:
        raise InputError(
            f"image and flow must have the same height, got image shape {np.shape(image)} "
            f"and flow shape {arr.shape}"
        )
    return np.concatenate([img, flow_to_color(arr, max_flow=max_flow)], axis=1)


def uncertainty_to_color(uncertainty, max_value=None, convert_to_bgr=True):
    """Colour-code a per-pixel uncertainty map (e.g. `getUncertainty()`: expected flow error
    in px) with OpenCV's INFERNO colormap: black 0 px, through red, to pale yellow at
    `max_value` and beyond.

    Args:
        uncertainty: (H, W) real-valued array, >= 0.
        max_value: value drawn at full scale. Default: the 99th percentile of the finite
            values (a few huge values would otherwise leave the rest black).
        convert_to_bgr: True (default) returns BGR for ``cv2.imwrite``; False RGB.

    Returns:
        (H, W, 3) uint8; non-finite values are black.
    """
    import cv2

    arr = np.asarray(uncertainty)
    if arr.ndim != 2 or arr.dtype.kind not in "uif" or 0 in arr.shape:
        raise InputError(f"uncertainty must be a non-empty (H, W) real array, got shape {arr.shape} {arr.dtype}")
    arr = arr.astype(np.float64)
    finite = np.isfinite(arr)
    if max_value is not None:
        try:
            max_value = _check_max_flow(max_value)
        except InputError:
            raise InputError(f"max_value must be a positive finite number or None, got {max_value!r}") from None
    elif finite.any():
        max_value = float(np.percentile(arr[finite], 99))
    scaled = np.where(finite, np.clip(arr / (float(max_value or 0) + _EPS), 0.0, 1.0), 0.0)
    bgr = cv2.applyColorMap(np.round(255 * scaled).astype(np.uint8), cv2.COLORMAP_INFERNO)
    bgr[~finite] = 0
    return bgr if convert_to_bgr else bgr[..., ::-1].copy()
