"""Reading frames from image files (the one reader of the CLI and `cvflow eval`)."""
from __future__ import annotations

import os

from cvflow.errors import CvflowFileNotFoundError, CvflowOSError, InputError

__all__ = ["read_image"]


def read_image(path):
    """The image at `path` as (H, W, 3) uint8 BGR (cv2.IMREAD_COLOR).

    Raises CvflowFileNotFoundError (no such file), CvflowOSError (a directory, or a file
    that cannot be opened) or InputError (a file OpenCV cannot decode).
    """
    import cv2

    p = os.fspath(path)
    if not os.path.exists(p):
        raise CvflowFileNotFoundError(f"no such image file: {p}")
    if not os.path.isfile(p):
        raise CvflowOSError(f"cannot read image {p}: not a regular file")
    if not os.access(p, os.R_OK):
        raise CvflowOSError(f"cannot read image {p}: permission denied")
    img = cv2.imread(p, cv2.IMREAD_COLOR)
    if img is None:
        raise InputError(f"cannot decode image {p} (not an image format OpenCV reads, or a corrupt file)")
    return img
