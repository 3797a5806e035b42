"""Writing `.npz` archives whose arrays may be larger than memory (memmaps), and the flow
stacks streamed into them."""
from __future__ import annotations

import zipfile
from pathlib import Path
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


class FlowStack:
    """Flows of one shape added one at a time to a raw little-endian file at `raw_path`
    (created by the first `add`; the flows are never held in memory), then written as one
    archive: `flow` (N, H, W, 2) in `dtype`, `frame_index` (N, 2) int64 (each pair's
    source frames) and any extra arrays."""

    def __init__(self, raw_path, dtype=np.float32):
        self.raw_path = Path(raw_path)
        self.dtype = np.dtype(dtype).newbyteorder("<")
        self.frames: list[tuple[int, int]] = []
        self._raw = None
        self._shape = None

    def add(self, source_pair, flow) -> None:
        if self._raw is None:
            self._raw = open(self.raw_path, "wb")
            self._shape = flow.shape
        self._raw.write(np.ascontiguousarray(flow, dtype=self.dtype).tobytes())
        self.frames.append(source_pair)

    def write_npz(self, path, /, **extra) -> None:
        """Write the archive of the flows added so far (one at least) to `path`."""
        self._raw.flush()
        arrays = {"flow": np.memmap(self.raw_path, dtype=self.dtype, mode="r", shape=(len(self.frames), *self._shape)),
                  "frame_index": np.asarray(self.frames, np.int64), **extra}
        write_npz(path, arrays)
        arrays.clear()  # drop the memmap before the raw file is removed

    def discard(self) -> None:
        """Close and remove the raw file."""
        if self._raw is not None:
            self._raw.close()
            self._raw = None
        self.raw_path.unlink(missing_ok=True)
