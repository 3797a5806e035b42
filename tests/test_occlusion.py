"""occlusion_mask(..., out_of_frame=True): pixels whose forward target leaves the frame
(as MPI-Sintel's occlusion masks count them), and the CLI's --occlusion-out-of-frame."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

import cvflow
from cvflow.cli import main
from cvflow.occlusion import leaves_frame

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
RAFT_SMALL = SHARED / "weights" / "raft-small.pth"
SINTEL = SHARED / "data" / "sintel_market_2"


def shift(h, w, dx, dy):
    return np.broadcast_to(np.array([dx, dy], np.float32), (h, w, 2)).copy()


def test_a_shift_out_of_the_frame_is_marked_only_with_out_of_frame():
    fw, bw = shift(6, 9, -3, 0), shift(6, 9, 3, 0)  # content moves 3 px left: columns 0-2 leave the frame
    assert not cvflow.occlusion_mask(fw, bw).any()  # the check alone: border samples agree
    occ = cvflow.occlusion_mask(fw, bw, out_of_frame=True)
    expected = np.zeros((6, 9), bool)
    expected[:, :3] = True
    np.testing.assert_array_equal(occ, expected)
    # down by 1.6 px: rows whose target passes H - 0.5 (y + 1.6 > 5.5: rows 4, 5)
    occ = cvflow.occlusion_mask(shift(6, 9, 0, 1.6), shift(6, 9, 0, -1.6), out_of_frame=True)
    assert occ[4:].all() and not occ[:4].any()


def test_leaves_frame_uses_the_pixel_extent():
    fw = np.zeros((3, 4, 2), np.float32)
    fw[0, 0] = (-0.49, 0)  # still inside pixel 0
    fw[0, 1] = (-1.51, 0)  # x = -0.51: outside
    fw[2, 3] = (0.49, 0.49)  # (3.49, 2.49): inside the last pixel
    fw[1, 3] = (0.51, 0)  # x = 3.51 > W - 0.5
    expected = np.zeros((3, 4), bool)
    expected[0, 1] = expected[1, 3] = True
    np.testing.assert_array_equal(leaves_frame(fw), expected)


def test_out_of_frame_adds_to_the_check_never_removes():
    rng = np.random.default_rng(0)
    fw = rng.normal(0, 3, (20, 30, 2)).astype(np.float32)
    bw = rng.normal(0, 3, (20, 30, 2)).astype(np.float32)
    plain = cvflow.occlusion_mask(fw, bw)
    both = cvflow.occlusion_mask(fw, bw, out_of_frame=True)
    np.testing.assert_array_equal(both, plain | leaves_frame(fw))


def test_out_of_frame_errors():
    fw = shift(4, 4, 0, 0)
    with pytest.raises(cvflow.CvflowTypeError, match=r"`out_of_frame` must be a bool, got 'yes'"):
        cvflow.occlusion_mask(fw, fw, out_of_frame="yes")


def test_cli_flag_needs_occlusion(tmp_path, capsys):
    a = tmp_path / "a.png"
    cv2.imwrite(str(a), np.zeros((8, 8, 3), np.uint8))
    code = main(["flow", str(a), str(a), "-m", "raft-small", "-o", str(tmp_path / "f.flo"),
                 "--occlusion-out-of-frame"])
    assert code == 2
    assert ("cvflow flow: error: --occlusion-out-of-frame changes the --occlusion mask: give --occlusion "
            "MASK.png with it") in capsys.readouterr().err


@pytest.mark.slow
def test_sintel_left_edge_leaves_the_frame_and_is_marked(tmp_path, capsys):
    """Sintel market_2 16 -> 17: the left edge moves ~-3.9 px; of the 1,077 pixels whose target is more
    than 2 px outside the frame the check alone marks 42, out_of_frame all of them."""
    if not RAFT_SMALL.is_file():
        pytest.skip(f"RAFT-small checkpoint not found at {RAFT_SMALL} (../shared beside the project)")
    of = cvflow.create("raft-small", weights=str(RAFT_SMALL))
    i0, i1 = cv2.imread(str(SINTEL / "frame_0016.png")), cv2.imread(str(SINTEL / "frame_0017.png"))
    fw, bw, occ, _ = of.calcBidirectional(i0, i1, occlusion=True)
    h, w = fw.shape[:2]
    tx, ty = np.arange(w)[None] + fw[..., 0], np.arange(h)[:, None] + fw[..., 1]
    far = (tx < -2) | (tx > w + 1) | (ty < -2) | (ty > h + 1)
    assert 1000 < far.sum() < 1150 and (far & occ).sum() < 100
    full = cvflow.occlusion_mask(fw, bw, out_of_frame=True)
    assert full[far].all()
    np.testing.assert_array_equal(full, occ | leaves_frame(fw))
    with pytest.raises(cvflow.InputError, match="`out_of_frame` is about the occlusion masks"):
        of.calcBidirectional(i0, i1, out_of_frame=True)
    mask = tmp_path / "occ.png"
    assert main(["flow", str(SINTEL / "frame_0016.png"), str(SINTEL / "frame_0017.png"), "-m", "raft-small",
                 "--weights", str(RAFT_SMALL), "-o", str(tmp_path / "f.flo"), "--occlusion", str(mask),
                 "--occlusion-out-of-frame"]) == 0
    np.testing.assert_array_equal(cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE) > 0, full)
