"""NumPy or CuPy: the array module of an array, and host copies.

The bottom of cvflow: `ops/` take their array module from their input (``get_xp(x)``)
and this module imports nothing of cvflow. CuPy is never imported here: an array can
only be a CuPy array once CuPy was imported by someone else.
"""
from __future__ import annotations

import sys

import numpy as np


def get_xp(x):
    """NumPy or CuPy, whichever module owns array ``x``."""
    if isinstance(x, np.ndarray) or np.isscalar(x):
        return np
    cupy = sys.modules.get("cupy")
    if cupy is not None and isinstance(x, cupy.ndarray):
        return cupy
    return np


def to_numpy(x) -> np.ndarray:
    """Host copy of an array from either module."""
    if isinstance(x, np.ndarray):
        return x
    get = getattr(x, "get", None)
    return get() if get is not None else np.asarray(x)
