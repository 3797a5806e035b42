"""KITTI 16-bit flow PNGs: round trip, channel layout, validity, corrupt files."""

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from cvflow.errors import CvflowFileNotFoundError, FlowFormatError, InputError
from cvflow.io.kitti import KITTI_FLOW_MAX, KITTI_FLOW_MIN, read_kitti_flow, write_kitti_flow


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("kitti")


@st.composite
def _flow_and_mask(draw):
    h, w = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    flow = draw(hnp.arrays(np.float32, (h, w, 2), elements=st.floats(-600, 600, width=32)))
    valid = draw(hnp.arrays(bool, (h, w)))
    return flow, valid


def test_representable_range():
    assert KITTI_FLOW_MIN == -512.0 and KITTI_FLOW_MAX == 511.984375


@settings(max_examples=40, deadline=None)
@given(data=_flow_and_mask())
def test_round_trip_within_quantisation(tmp, data):
    flow, valid = data
    p = tmp / "rt.png"
    assert write_kitti_flow(p, flow, valid) is True
    back, back_valid = read_kitti_flow(p)
    assert back.dtype == np.float32 and back.shape == flow.shape
    assert back_valid.dtype == bool and np.array_equal(back_valid, valid)
    expected = np.clip(flow, KITTI_FLOW_MIN, KITTI_FLOW_MAX)
    assert np.all(np.abs(back - expected)[valid] <= 0.5 / 64 + 1e-6)
    assert np.all(back[~valid] == 0)


def test_file_layout_matches_kitti_devkit(tmp):
    flow = np.zeros((2, 3, 2), np.float32)
    flow[0, 1] = (1.5, -2.0)
    valid = np.ones((2, 3), bool)
    valid[1, 2] = False
    p = tmp / "layout.png"
    write_kitti_flow(p, flow, valid)
    raw = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16 and raw.shape == (2, 3, 3)
    # cv2 BGR order: B = valid, G = v, R = u.
    assert tuple(raw[0, 1]) == (1, 2**15 - 128, 2**15 + 96)
    assert tuple(raw[1, 2]) == (0, 2**15, 2**15)


def test_reads_files_written_by_cv2(tmp):
    raw = np.zeros((4, 5, 3), np.uint16)
    raw[..., 0] = 1
    raw[..., 1] = 2**15 + 64 * 3  # v = 3
    raw[..., 2] = 2**15 - 32  # u = -0.5
    raw[0, 0] = (0, 12345, 54321)  # invalid pixel: flow reported as 0
    p = tmp / "cv2.png"
    assert cv2.imwrite(str(p), raw)
    flow, valid = read_kitti_flow(p)
    assert not valid[0, 0] and valid.sum() == 19
    assert np.all(flow[0, 0] == 0)
    assert np.all(flow[valid] == (-0.5, 3.0))


def test_default_valid_and_nonfinite_pixels(tmp):
    flow = np.full((2, 2, 2), 1.0, np.float32)
    flow[0, 0, 1] = np.nan
    flow[1, 1, 0] = -np.inf
    p = tmp / "nan.png"
    write_kitti_flow(p, flow)
    back, valid = read_kitti_flow(p)
    assert valid.tolist() == [[False, True], [True, False]]
    assert np.all(back[valid] == 1.0) and np.all(back[~valid] == 0)


def test_numeric_valid_mask(tmp):
    p = tmp / "num.png"
    write_kitti_flow(p, np.zeros((1, 3, 2)), np.array([[0, 2, 1]], np.uint8))
    assert read_kitti_flow(p)[1].tolist() == [[False, True, True]]


def test_missing_file(tmp):
    with pytest.raises(CvflowFileNotFoundError, match="not found.*missing.png"):
        read_kitti_flow(tmp / "missing.png")


def test_write_into_missing_directory(tmp):
    with pytest.raises(CvflowFileNotFoundError, match="does not exist"):
        write_kitti_flow(tmp / "nodir" / "a.png", np.zeros((1, 1, 2)))


@pytest.mark.parametrize("valid, msg", [
    (np.ones((2, 3), bool), r"shape \(3, 2\) \(flow height, width\), got shape \(2, 3\) dtype bool"),
    (np.ones((3, 2), complex), r"got shape \(3, 2\) dtype complex128"),
])
def test_write_rejects_bad_valid(tmp, valid, msg):
    with pytest.raises(InputError, match=msg):
        write_kitti_flow(tmp / "v.png", np.zeros((3, 2, 2)), valid)


def test_write_rejects_bad_flow(tmp):
    with pytest.raises(InputError, match=r"shape \(3, 2\) dtype float64"):
        write_kitti_flow(tmp / "f.png", np.zeros((3, 2)))


@pytest.mark.parametrize("image, msg", [
    (np.zeros((4, 4, 3), np.uint8), "16-bit 3-channel .* got bit depth 8 colour type 2"),
    (np.zeros((4, 4), np.uint16), "16-bit 3-channel .* got bit depth 16 colour type 0"),
    (np.zeros((4, 4, 4), np.uint16), "16-bit 3-channel .* got bit depth 16 colour type 6"),
])
def test_rejects_other_pngs(tmp, image, msg):
    p = tmp / "other.png"
    cv2.imwrite(str(p), image)
    with pytest.raises(FlowFormatError, match=msg):
        read_kitti_flow(p)


def test_rejects_non_png_and_truncated(tmp):
    p = tmp / "bad.png"
    p.write_bytes(b"hello world")
    with pytest.raises(FlowFormatError, match="bad.png.*not a PNG"):
        read_kitti_flow(p)
    p.write_bytes(b"\x89PNG\r\n\x1a\n\0\0")
    with pytest.raises(FlowFormatError, match="no IHDR chunk"):
        read_kitti_flow(p)
    ok = tmp / "ok.png"
    write_kitti_flow(ok, np.random.default_rng(0).normal(size=(40, 40, 2)) * 50)
    p.write_bytes(ok.read_bytes()[:100])
    with pytest.raises(FlowFormatError, match="cannot decode PNG"):
        read_kitti_flow(p)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 199))
def test_random_corruption_never_crashes(tmp, junk, cut):
    ok = tmp / "src.png"
    if not ok.exists():
        write_kitti_flow(ok, np.ones((8, 8, 2)))
    data = ok.read_bytes()
    p = tmp / "fuzz.png"
    p.write_bytes(data[:cut] + junk)
    try:
        flow, valid = read_kitti_flow(p)
    except FlowFormatError as e:
        assert "fuzz.png" in str(e)
    else:
        assert flow.shape[:2] == valid.shape
