"""Middlebury ``.flo`` optical-flow files, byte-compatible with OpenCV.

Layout (all little-endian): float32 magic ``202021.25`` (the bytes ``b"PIEH"``),
int32 width, int32 height, then ``height * width * 2`` float32 values in
row-major order, ``(u, v)`` interleaved per pixel.  This is exactly what
``cv2.writeOpticalFlow`` writes and ``cv2.readOpticalFlow`` reads.
"""

import os

import numpy as np

from cvflow.errors import CvflowFileNotFoundError, CvflowTypeError, FlowFormatError, InputError, os_error

MAGIC = b"PIEH"  # float32 202021.25, little-endian
_HEADER_BYTES = 12
_INT32_MAX = 2**31 - 1

__all__ = ["readOpticalFlow", "writeOpticalFlow"]


def fspath(path):
    """``os.fspath`` for str/PathLike paths, with a cvflow error for anything else."""
    try:
        return os.fspath(path)
    except TypeError:
        raise CvflowTypeError(
            f"path must be str or os.PathLike, got {type(path).__name__}"
        ) from None


def check_flow_array(flow, what="flow"):
    """Return ``flow`` as a real-valued ndarray of shape (H, W, 2), H, W >= 1.

    Raises InputError naming the offending shape and dtype.
    """
    try:
        arr = np.asarray(flow)
    except (TypeError, ValueError) as e:
        raise InputError(f"{what} must be a real-valued (H, W, 2) array: {e}") from None
    real = arr.dtype.kind in "iuf"
    if not real or arr.ndim != 3 or arr.shape[2] != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise InputError(
            f"{what} must be a real-valued (H, W, 2) array with H, W >= 1, "
            f"got shape {arr.shape} dtype {arr.dtype}"
        )
    return arr


def check_valid_mask(valid, shape):
    """A validity mask as (H, W) bool (nonzero = valid); raises InputError naming the shapes."""
    try:
        v = np.asarray(valid)
    except (TypeError, ValueError) as e:
        raise InputError(f"valid must be an (H, W) array: {e}") from None
    if v.shape != shape or v.dtype.kind not in "biuf":
        raise InputError(
            f"valid must be a bool or numeric array of shape {shape} (flow height, width), "
            f"got shape {v.shape} dtype {v.dtype}"
        )
    return v != 0


def _open_for_reading(path):
    p = fspath(path)
    try:
        return p, open(p, "rb")
    except FileNotFoundError:
        raise CvflowFileNotFoundError(f"flow file not found: {p!r}") from None
    except OSError as e:  # a directory, no permission, ...
        raise os_error("read flow file", p, e) from None


def readOpticalFlow(path):
    """Read a Middlebury ``.flo`` file.

    Args:
        path: str or os.PathLike.

    Returns:
        (H, W, 2) float32 array, ``flow[y, x] = (dx, dy)`` in pixels.

    Raises:
        CvflowFileNotFoundError: the file does not exist.
        CvflowOSError: it cannot be read (a directory, no permission, ...).
        FlowFormatError: bad magic, non-positive size, or a size that does not match
            the file length. The header is checked against the file size before
            anything is allocated, so a corrupt header cannot trigger a huge allocation.
    """
    p, f = _open_for_reading(path)
    with f:
        size = os.fstat(f.fileno()).st_size
        header = f.read(_HEADER_BYTES)
        if len(header) < _HEADER_BYTES:
            raise FlowFormatError(
                f"{p!r}: truncated .flo header ({len(header)} of {_HEADER_BYTES} bytes)"
            )
        if header[:4] != MAGIC:
            raise FlowFormatError(
                f"{p!r}: bad .flo magic {header[:4]!r} (expected {MAGIC!r} = 202021.25)"
            )
        width, height = (int(x) for x in np.frombuffer(header, dtype="<i4", count=2, offset=4))
        if width <= 0 or height <= 0:
            raise FlowFormatError(
                f"{p!r}: invalid .flo size width={width} height={height} (must be positive)"
            )
        # Python ints: no overflow, and nothing is allocated before this check.
        expected = _HEADER_BYTES + width * height * 2 * 4
        if size != expected:
            problem = "truncated" if size < expected else "has trailing bytes"
            raise FlowFormatError(
                f"{p!r}: .flo data {problem}: header claims {width}x{height} "
                f"({expected} bytes) but the file holds {size} bytes"
            )
        data = np.fromfile(f, dtype="<f4", count=width * height * 2)
    if data.size != width * height * 2:  # file shrank while we read it
        raise FlowFormatError(f"{p!r}: .flo data truncated while reading")
    return data.astype(np.float32, copy=False).reshape(height, width, 2)


def writeOpticalFlow(path, flow):
    """Write ``flow`` as a Middlebury ``.flo`` file (readable by ``cv2.readOpticalFlow``).

    Args:
        path: str or os.PathLike; overwritten if it exists (not atomically).
        flow: (H, W, 2) real-valued array, cast to float32 (non-finite values are kept).

    Returns:
        True.

    Raises:
        InputError: ``flow`` is not a real-valued (H, W, 2) array, or too large for
            the int32 header.
        CvflowOSError: the file cannot be written; the message gives the OS reason
            (missing directory, read-only file system, a directory at ``path``, ...).
    """
    p = fspath(path)
    arr = check_flow_array(flow)
    height, width = arr.shape[:2]
    if width > _INT32_MAX or height > _INT32_MAX:
        raise InputError(f"flow of shape {arr.shape} is too large for the .flo int32 header")
    with np.errstate(over="ignore"):  # float64 beyond float32 range becomes inf, like cv2
        data = np.ascontiguousarray(arr, dtype="<f4")
    header = MAGIC + np.array([width, height], dtype="<i4").tobytes()
    try:
        with open(p, "wb") as f:
            f.write(header)
            f.write(data.tobytes())
    except OSError as e:
        raise os_error("write", p, e) from None
    return True
