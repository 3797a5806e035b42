"""calcBidirectional against calc on real frames (MPI-Sintel market_2, RAFT-small release
weights): the same arithmetic, so the same numbers. Each encoder runs one frame at a time in
both paths; batched, float32 rounding depended on the batch (up to 1.9e-4 px apart)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

import cvflow

SHARED = Path(__file__).resolve().parents[2] / "shared"
RAFT_SMALL = SHARED / "weights" / "raft-small.pth"
SINTEL = SHARED / "data" / "sintel_market_2"


@pytest.mark.slow
@pytest.mark.parametrize("first", [16, 18])
def test_bidirectional_equals_calc_both_ways_on_sintel(first):
    if not RAFT_SMALL.is_file() or not SINTEL.is_dir():
        pytest.skip(f"RAFT-small checkpoint or Sintel frames not found under {SHARED} (../shared beside the project)")
    i0, i1 = (cv2.imread(str(SINTEL / f"frame_{n:04d}.png")) for n in (first, first + 1))
    of = cvflow.create("raft-small", weights=str(RAFT_SMALL))
    fw, bw = of.calcBidirectional(i0, i1)
    calc_fw, calc_bw = of.calc(i0, i1), of.calc(i1, i0)
    # the README promises 1e-4 px; on the CPU the two paths do identical arithmetic
    assert np.abs(fw - calc_fw).max() <= 1e-4 and np.abs(bw - calc_bw).max() <= 1e-4
    np.testing.assert_array_equal(fw, calc_fw)
    np.testing.assert_array_equal(bw, calc_bw)
