"""KITTI optical-flow ground-truth PNGs (16-bit, 3 channels).

Each pixel stores ``(u, v, valid)`` as uint16 with ``value = flow * 64 + 2**15``
for u and v and ``valid`` in {0, 1}.  In the file's RGB order R = u, G = v,
B = valid; OpenCV's BGR arrays therefore hold ``[..., 0] = valid``,
``[..., 1] = v``, ``[..., 2] = u``.

Quantisation: flow is rounded to the nearest 1/64 px and clipped to the
representable range ``[-512, 511.984375]`` px (``(0 - 2**15) / 64`` to
``(2**16 - 1 - 2**15) / 64``).
"""

import cv2
import numpy as np

from cvflow.errors import CvflowFileNotFoundError, FlowFormatError, os_error
from cvflow.io.flo import check_flow_array, check_valid_mask, fspath

__all__ = ["read_kitti_flow", "write_kitti_flow", "KITTI_FLOW_MIN", "KITTI_FLOW_MAX"]

_SCALE = 64.0
_OFFSET = 2**15
KITTI_FLOW_MIN = (0 - _OFFSET) / _SCALE  # -512.0 px
KITTI_FLOW_MAX = (2**16 - 1 - _OFFSET) / _SCALE  # 511.984375 px

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_RGB = 2  # IHDR colour type for truecolour without alpha


def _check_png_header(p, data):
    """Validate the PNG signature and IHDR (16-bit RGB) before decoding anything."""
    if data[:8] != _PNG_SIGNATURE:
        raise FlowFormatError(f"{p!r}: not a PNG file (bad signature {data[:8]!r})")
    # IHDR is always the first chunk: length(4) type(4) width(4) height(4) depth(1) colour(1)
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise FlowFormatError(f"{p!r}: truncated or corrupt PNG header (no IHDR chunk)")
    width = int.from_bytes(data[16:20], "big")
    height = int.from_bytes(data[20:24], "big")
    depth, colour = data[24], data[25]
    if width == 0 or height == 0:
        raise FlowFormatError(f"{p!r}: PNG has zero size {width}x{height}")
    if depth != 16 or colour != _PNG_RGB:
        raise FlowFormatError(
            f"{p!r}: KITTI flow needs a 16-bit 3-channel (RGB) PNG, "
            f"got bit depth {depth} colour type {colour}"
        )


def read_kitti_flow(path):
    """Read a KITTI flow PNG.

    Args:
        path: str or os.PathLike.

    Returns:
        ``(flow, valid)``: flow (H, W, 2) float32 in px (0 where invalid), valid (H, W) bool.

    Raises:
        CvflowFileNotFoundError: the file does not exist.
        CvflowOSError: it cannot be read (a directory, no permission, ...).
        FlowFormatError: not a decodable 16-bit 3-channel PNG.
    """
    p = fspath(path)
    try:
        with open(p, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise CvflowFileNotFoundError(f"KITTI flow file not found: {p!r}") from None
    except OSError as e:
        raise os_error("read KITTI flow file", p, e) from None
    _check_png_header(p, data)
    try:
        img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as e:
        raise FlowFormatError(f"{p!r}: cannot decode PNG: {e}") from None
    if img is None:
        raise FlowFormatError(f"{p!r}: cannot decode PNG (corrupt or truncated data)")
    if img.dtype != np.uint16 or img.ndim != 3 or img.shape[2] != 3:
        raise FlowFormatError(
            f"{p!r}: KITTI flow needs a 16-bit 3-channel PNG, "
            f"decoded shape {img.shape} dtype {img.dtype}"
        )
    valid = img[..., 0] > 0
    flow = (img[..., 2:0:-1].astype(np.float32) - _OFFSET) / _SCALE  # BGR -> (u, v)
    flow[~valid] = 0.0
    return flow, valid


def write_kitti_flow(path, flow, valid=None):
    """Write ``flow`` as a KITTI 16-bit PNG.

    Args:
        path: str or os.PathLike (``.png``); overwritten if it exists.
        flow: (H, W, 2) real-valued array in px. Rounded to 1/64 px and clipped to
            ``[KITTI_FLOW_MIN, KITTI_FLOW_MAX]`` = ``[-512, 511.984375]``.
        valid: optional (H, W) mask (bool, or numeric with nonzero = valid); default
            all valid. Pixels with non-finite flow are always written as invalid.
            Invalid pixels are stored with zero flow.

    Returns:
        True.

    Raises:
        InputError: bad ``flow`` or ``valid`` shape/dtype.
        CvflowOSError: the file cannot be written (the message gives the OS reason).
        FlowFormatError: OpenCV failed to encode or write the PNG.
    """
    p = fspath(path)
    arr = check_flow_array(flow).astype(np.float64)
    mask = np.isfinite(arr).all(axis=2)
    if valid is not None:
        mask &= check_valid_mask(valid, arr.shape[:2])
    arr[~mask] = 0.0
    q = np.clip(np.rint(arr * _SCALE + _OFFSET), 0, 2**16 - 1).astype(np.uint16)
    # cv2 writes BGR arrays as RGB files, so put u last to land in the R channel.
    img = np.dstack([mask.astype(np.uint16), q[..., 1], q[..., 0]])
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise FlowFormatError(f"cannot encode KITTI flow PNG for {p!r}")
    try:
        with open(p, "wb") as f:
            f.write(buf.tobytes())
    except OSError as e:
        raise os_error("write", p, e) from None
    return True
