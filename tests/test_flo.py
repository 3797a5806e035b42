"""Middlebury .flo reading/writing: round trips, OpenCV interop, corrupt files."""

import os
import pathlib
import struct
import tracemalloc

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from cvflow.errors import CvflowFileNotFoundError, CvflowTypeError, FlowFormatError, InputError
from cvflow.io.flo import readOpticalFlow, writeOpticalFlow


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("flo")


def _flows():
    shapes = st.tuples(st.integers(1, 40), st.integers(1, 40), st.just(2))
    values = st.floats(width=32, allow_nan=True, allow_infinity=True)
    return hnp.arrays(np.float32, shapes, elements=values)


def _header(width, height, magic=b"PIEH"):
    return magic + struct.pack("<ii", width, height)


def test_magic_is_the_float_202021_25():
    assert struct.pack("<f", 202021.25) == b"PIEH"


@settings(max_examples=60, deadline=None)
@given(flow=_flows())
def test_round_trip_is_bit_exact(tmp, flow):
    p = tmp / "rt.flo"
    assert writeOpticalFlow(p, flow) is True
    back = readOpticalFlow(p)
    assert back.dtype == np.float32 and back.shape == flow.shape
    assert np.array_equal(back.view(np.uint32), flow.view(np.uint32))  # NaN payloads too
    assert p.stat().st_size == 12 + flow.size * 4


@settings(max_examples=30, deadline=None)
@given(flow=_flows())
def test_cv2_interop_both_directions(tmp, flow):
    ours, theirs = tmp / "ours.flo", tmp / "theirs.flo"
    writeOpticalFlow(str(ours), flow)
    assert cv2.writeOpticalFlow(str(theirs), flow)
    assert ours.read_bytes() == theirs.read_bytes()
    from_cv2 = cv2.readOpticalFlow(str(ours))
    assert np.array_equal(from_cv2.view(np.uint32), flow.view(np.uint32))
    assert np.array_equal(readOpticalFlow(theirs).view(np.uint32), flow.view(np.uint32))


def test_flow_layout_is_u_then_v_row_major(tmp):
    flow = np.zeros((2, 3, 2), np.float32)
    flow[1, 2] = (7.5, -3.25)
    p = tmp / "layout.flo"
    writeOpticalFlow(p, flow)
    data = np.frombuffer(p.read_bytes()[12:], "<f4")
    assert data[(1 * 3 + 2) * 2] == 7.5 and data[(1 * 3 + 2) * 2 + 1] == -3.25
    assert p.read_bytes()[:12] == _header(3, 2)


def test_float64_and_int_inputs_are_cast(tmp):
    p = tmp / "cast.flo"
    writeOpticalFlow(p, np.full((2, 2, 2), 1e300))  # beyond float32 -> inf, as cv2 would
    assert np.isinf(readOpticalFlow(p)).all()
    writeOpticalFlow(p, np.arange(8).reshape(2, 2, 2))
    assert np.array_equal(readOpticalFlow(p), np.arange(8, dtype=np.float32).reshape(2, 2, 2))


def test_missing_file(tmp):
    with pytest.raises(CvflowFileNotFoundError, match="not found.*nope.flo"):
        readOpticalFlow(tmp / "nope.flo")
    with pytest.raises(FileNotFoundError, match="nope.flo"):
        readOpticalFlow(str(tmp / "nope.flo"))


def test_write_into_missing_directory(tmp):
    with pytest.raises(CvflowFileNotFoundError, match="does not exist"):
        writeOpticalFlow(tmp / "no_dir" / "x.flo", np.zeros((1, 1, 2), np.float32))


def test_bad_path_type():
    with pytest.raises(CvflowTypeError, match="path must be str or os.PathLike, got int"):
        readOpticalFlow(3)


@pytest.mark.parametrize("bad, desc", [
    (np.zeros((4, 5, 3), np.float32), r"shape \(4, 5, 3\) dtype float32"),
    (np.zeros((4, 5), np.float32), r"shape \(4, 5\) dtype float32"),
    (np.zeros((0, 5, 2), np.float32), r"shape \(0, 5, 2\) dtype float32"),
    (np.zeros((4, 5, 2), np.complex64), r"shape \(4, 5, 2\) dtype complex64"),
    (np.zeros((4, 5, 2), bool), r"shape \(4, 5, 2\) dtype bool"),
    ("flow", r"shape \(\) dtype <U4"),
])
def test_write_rejects_bad_flow(tmp, bad, desc):
    with pytest.raises(InputError, match=desc):
        writeOpticalFlow(tmp / "bad.flo", bad)


@pytest.mark.parametrize("content, msg", [
    (b"", r"truncated \.flo header \(0 of 12 bytes\)"),
    (b"PIEH\x01\x00", r"truncated \.flo header \(6 of 12 bytes\)"),
    (_header(1, 1, b"PIEX") + b"\0" * 8, r"bad \.flo magic b'PIEX'"),
    (_header(-1, 1) + b"\0" * 8, r"invalid \.flo size width=-1 height=1"),
    (_header(1, 0), r"invalid \.flo size width=1 height=0"),
    (_header(-2**31, -2**31), r"width=-2147483648 height=-2147483648"),
    (_header(2, 2) + b"\0" * 31, r"truncated: header claims 2x2 \(44 bytes\) but the file holds 43"),
    (_header(1, 1) + b"\0" * 9, r"trailing bytes: header claims 1x1 \(20 bytes\) but the file holds 21"),
])
def test_corrupt_files(tmp, content, msg):
    p = tmp / "corrupt.flo"
    p.write_bytes(content)
    with pytest.raises(FlowFormatError, match=msg):
        readOpticalFlow(p)
    with pytest.raises(ValueError, match="corrupt.flo"):  # names the path, is a ValueError
        readOpticalFlow(p)


def _peak_bytes(fn):
    tracemalloc.start()
    try:
        fn()
    except FlowFormatError:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


@pytest.mark.parametrize("w, h", [(2**31 - 1, 2**31 - 1), (2**31 - 1, 1), (1, 2**31 - 1), (65536, 65536)])
def test_huge_header_is_rejected_without_allocating(tmp, w, h):
    p = tmp / "huge.flo"
    p.write_bytes(_header(w, h) + b"\0" * 64)
    with pytest.raises(FlowFormatError, match=rf"header claims {w}x{h} .* holds 76 bytes"):
        readOpticalFlow(p)
    assert _peak_bytes(lambda: readOpticalFlow(p)) < 1 << 20


@settings(max_examples=150, deadline=None)
@given(
    header=st.one_of(
        st.binary(min_size=0, max_size=12),
        st.tuples(st.sampled_from([b"PIEH", b"HEIP", b"\0\0\0\0"]),
                  st.integers(-2**31, 2**31 - 1), st.integers(-2**31, 2**31 - 1))
        .map(lambda t: _header(t[1], t[2], t[0])),
    ),
    tail=st.binary(max_size=96),
)
def test_random_headers_never_crash_or_allocate(tmp, header, tail):
    p = tmp / "fuzz.flo"
    p.write_bytes(header + tail)
    peak = 0
    tracemalloc.start()
    try:
        flow = readOpticalFlow(p)
    except FlowFormatError as e:
        assert "fuzz.flo" in str(e)
    else:
        w, h = struct.unpack("<ii", header[4:12])
        assert flow.shape == (h, w, 2) and 12 + flow.size * 4 == len(header + tail)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < 1 << 20


def test_accepts_pathlike_and_str(tmp):
    flow = np.ones((3, 4, 2), np.float32)
    p = tmp / "pl.flo"
    writeOpticalFlow(pathlib.PurePath(p), flow)
    assert np.array_equal(readOpticalFlow(os.fspath(p)), flow)
