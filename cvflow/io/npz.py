"""Writing `.npz` archives whose arrays may be larger than memory (memmaps)."""
from __future__ import annotations

import zipfile
from typing import Mapping

import numpy as np


def write_npz(path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write `arrays` to `path` as `np.savez` lays them out (stored, not compressed), one
    array at a time straight from its buffer: a memmapped (N, H, W, 2) flow stack is
    streamed, never loaded. Zip64 throughout, so members may exceed 4 GiB."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, arr in arrays.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(arr), allow_pickle=False)
