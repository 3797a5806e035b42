"""flow_to_color / flow_panel, accuracy metrics, and backward warping."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from cvflow.errors import InputError
from cvflow.metrics import epe, epe_map, fl_all, outlier_rates
from cvflow.viz import flow_panel, flow_to_color, make_colorwheel
from cvflow.warping import warp

# ---------------------------------------------------------------- viz


def _reference_pixel(fx, fy):
    """Scalar transcription of Middlebury's computeColor (RGB) for normalised (fx, fy)."""
    counts = [15, 6, 4, 11, 13, 6]
    wheel = []
    for seg, n in enumerate(counts):
        for i in range(n):
            r = math.floor(255 * i / n)
            wheel.append([(255, r, 0), (255 - r, 255, 0), (0, 255, r),
                          (0, 255 - r, 255), (r, 0, 255), (255, 0, 255 - r)][seg])
    rad = math.hypot(fx, fy)
    a = math.atan2(-fy, -fx) / math.pi
    fk = (a + 1) / 2 * (len(wheel) - 1)
    k0 = int(fk)
    k1 = (k0 + 1) % len(wheel)
    f = fk - k0
    out = []
    for b in range(3):
        col = ((1 - f) * wheel[k0][b] + f * wheel[k1][b]) / 255
        col = 1 - rad * (1 - col) if rad <= 1 else col * 0.75
        out.append(int(255 * col))
    return tuple(out)


def test_colorwheel_anchor_colours():
    w = make_colorwheel()
    assert w.shape == (55, 3)
    expected = {0: (255, 0, 0), 15: (255, 255, 0), 21: (0, 255, 0), 25: (0, 255, 255),
                36: (0, 0, 255), 49: (255, 0, 255)}
    for k, rgb in expected.items():
        assert tuple(w[k]) == rgb


def test_known_directions_rgb_and_bgr():
    flow = np.array([[[0, 0], [1, 0], [-1, 0], [0, 1], [0, -1]]], np.float32)
    rgb = flow_to_color(flow, convert_to_bgr=False)
    assert rgb.dtype == np.uint8 and rgb.shape == (1, 5, 3)
    assert tuple(rgb[0, 0]) == (255, 255, 255)  # zero flow: white
    assert tuple(rgb[0, 1]) == (255, 0, 0)  # +x: red
    assert tuple(rgb[0, 2]) == (0, 209, 255)  # -x: cyan-blue
    assert tuple(rgb[0, 3]) == (255, 229, 0)  # +y (down): orange-yellow
    assert tuple(rgb[0, 4]) == (88, 0, 255)  # -y (up): blue-magenta
    bgr = flow_to_color(flow)  # default is BGR for cv2.imwrite
    assert np.array_equal(bgr, rgb[..., ::-1])


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.float32, st.tuples(st.integers(1, 6), st.integers(1, 6), st.just(2)),
                  elements=st.floats(-50, 50, width=32)),
       st.one_of(st.none(), st.floats(0.5, 80)))
def test_matches_scalar_reference(flow, max_flow):
    rgb = flow_to_color(flow, max_flow=max_flow, convert_to_bgr=False)
    f = flow.astype(np.float64)
    rad_max = max_flow if max_flow is not None else np.hypot(f[..., 0], f[..., 1]).max()
    for y, x in np.ndindex(flow.shape[:2]):
        u, v = f[y, x] / (rad_max + 1e-5)
        assert tuple(rgb[y, x]) == _reference_pixel(u, v)


def test_max_flow_respected():
    flow = np.array([[[2, 0], [8, 0], [4, 0]]], np.float32)
    rgb = flow_to_color(flow, max_flow=4, convert_to_bgr=False)
    assert tuple(rgb[0, 0]) == (255, 127, 127)  # half radius: half saturated
    assert tuple(rgb[0, 1]) == (191, 0, 0)  # beyond max_flow: darkened x0.75
    assert tuple(rgb[0, 2]) == (255, 0, 0)
    auto = flow_to_color(flow[:, :1], convert_to_bgr=False)  # normalised by its own max
    assert tuple(auto[0, 0]) == (255, 0, 0)


@pytest.mark.filterwarnings("error")
def test_nonfinite_is_black_and_quiet():
    flow = np.array([[[np.nan, 0], [1, np.inf], [1, 0]]], np.float32)
    bgr = flow_to_color(flow)
    assert tuple(bgr[0, 0]) == (0, 0, 0) and tuple(bgr[0, 1]) == (0, 0, 0)
    assert tuple(bgr[0, 2]) == (0, 0, 255)
    assert not flow_to_color(np.full((2, 2, 2), np.nan)).any()
    assert (flow_to_color(np.zeros((2, 2, 2))) == 255).all()


@pytest.mark.parametrize("max_flow", [0, -1.0, float("nan"), float("inf"), "big", True])
def test_bad_max_flow(max_flow):
    with pytest.raises(InputError, match="max_flow must be a positive finite number"):
        flow_to_color(np.zeros((2, 2, 2)), max_flow=max_flow)


def test_bad_flow_shape():
    with pytest.raises(InputError, match=r"shape \(2, 2, 3\) dtype float64"):
        flow_to_color(np.zeros((2, 2, 3)))


@pytest.mark.parametrize("image", [
    np.arange(12, dtype=np.uint8).reshape(3, 4),
    np.arange(12, dtype=np.uint8).reshape(3, 4, 1),
    np.repeat(np.arange(12, dtype=np.uint8).reshape(3, 4, 1), 3, axis=2),
    np.arange(12, dtype=np.float32).reshape(3, 4),
])
def test_flow_panel(image):
    flow = np.zeros((3, 5, 2), np.float32)
    flow[0, 0] = (1, 0)
    panel = flow_panel(image, flow, max_flow=1)
    assert panel.dtype == np.uint8 and panel.shape == (3, 9, 3)
    left = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert all(np.array_equal(panel[:, :4, c], left) for c in range(3))
    assert np.array_equal(panel[:, 4:], flow_to_color(flow, max_flow=1))


def test_flow_panel_errors():
    with pytest.raises(InputError, match=r"same height.*image shape \(4, 4\).*flow shape \(3, 4, 2\)"):
        flow_panel(np.zeros((4, 4), np.uint8), np.zeros((3, 4, 2)))
    with pytest.raises(InputError, match=r"got shape \(3, 4, 2\) dtype uint8"):
        flow_panel(np.zeros((3, 4, 2), np.uint8), np.zeros((3, 4, 2)))
    with pytest.raises(InputError, match=r"got shape \(3, 4\) dtype uint16"):
        flow_panel(np.zeros((3, 4), np.uint16), np.zeros((3, 4, 2)))


# ---------------------------------------------------------------- metrics

FLOW = np.zeros((2, 2, 2), np.float32)
GT = np.array([[[3, 4], [1, 0]], [[0, 2], [0, 0]]], np.float32)  # EPEs 5, 1, 2, 0


def test_epe_and_map():
    assert np.allclose(epe_map(FLOW, GT), [[5, 1], [2, 0]])
    assert epe(FLOW, GT) == 2.0
    assert epe(FLOW, GT, np.array([[True, False], [False, True]])) == 2.5
    assert epe(FLOW, GT, np.array([[0, 1], [1, 0]], np.uint8)) == 1.5
    assert isinstance(epe(FLOW, GT), float)


def test_outlier_rates():
    assert outlier_rates(FLOW, GT) == {1: 0.5, 3: 0.25, 5: 0.0}
    assert outlier_rates(FLOW, GT, np.array([[1, 1], [0, 0]], bool), thresholds=(0.5, 4.9)) == {0.5: 1.0, 4.9: 0.5}


def test_fl_all_needs_both_absolute_and_relative_error():
    gt = np.array([[[100, 0], [10, 0], [0, 0], [2, 0]]], np.float32)
    flow = np.array([[[104, 0], [14, 0], [0, 3], [2, 0]]], np.float32)
    # errors 4 (< 5% of 100), 4 (> 5% of 10), 3 (not > 3), 0
    assert fl_all(flow, gt) == 0.25
    assert fl_all(flow, gt, np.array([[False, True, False, False]])) == 1.0
    assert fl_all(FLOW, GT) == 0.25


def test_metric_errors():
    with pytest.raises(InputError, match=r"flow \(2, 2, 2\) vs gt \(2, 3, 2\)"):
        epe(FLOW, np.zeros((2, 3, 2)))
    with pytest.raises(InputError, match=r"gt must be .* got shape \(2, 2\) dtype float64"):
        fl_all(FLOW, np.zeros((2, 2)))
    with pytest.raises(InputError, match=r"valid must be .* shape \(2, 2\).* got shape \(2, 3\)"):
        epe(FLOW, GT, np.ones((2, 3), bool))
    with pytest.raises(InputError, match="selects no pixels"):
        outlier_rates(FLOW, GT, np.zeros((2, 2), bool))
    with pytest.raises(InputError, match="thresholds must be"):
        outlier_rates(FLOW, GT, thresholds=())


# ---------------------------------------------------------------- warp

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32, np.float64])
@pytest.mark.parametrize("channels", [None, 1, 3, 6])
def test_zero_flow_is_identity(dtype, channels):
    shape = (7, 9) if channels is None else (7, 9, channels)
    img = RNG.integers(0, 200, size=shape).astype(dtype)
    out = warp(img, np.zeros((7, 9, 2), np.float32))
    assert out.dtype == img.dtype and out.shape == img.shape
    assert np.array_equal(out, img)


@settings(max_examples=40, deadline=None)
@given(st.integers(4, 20), st.integers(4, 20), st.integers(-3, 3), st.integers(-3, 3),
       st.sampled_from(["replicate", "constant"]))
def test_integer_shift_equals_slicing(h, w, dx, dy, border):
    img = np.random.default_rng(h * w).random((h, w, 3)).astype(np.float32) + 1
    flow = np.broadcast_to(np.array([dx, dy], np.float32), (h, w, 2))
    out = warp(img, flow, border=border)
    ys, xs = slice(max(0, -dy), min(h, h - dy)), slice(max(0, -dx), min(w, w - dx))
    src = img[ys.start + dy:ys.stop + dy, xs.start + dx:xs.stop + dx]
    assert np.array_equal(out[ys, xs], src)
    outside = np.ones((h, w), bool)
    outside[ys, xs] = False
    if border == "constant":
        assert not out[outside].any()
    else:
        yy, xx = np.nonzero(outside)
        nearest = img[np.clip(yy + dy, 0, h - 1), np.clip(xx + dx, 0, w - 1)]
        assert np.array_equal(out[outside], nearest)


def test_subpixel_is_bilinear():
    ramp = np.tile(np.arange(10, dtype=np.float32), (4, 1))
    out = warp(ramp, np.full((4, 10, 2), (0.25, 0.0), np.float32))
    assert np.allclose(out[:, :9], ramp[:, :9] + 0.25, atol=1e-5)


def test_nonfinite_flow_gives_zero():
    img = np.full((3, 3), 9, np.uint8)
    flow = np.zeros((3, 3, 2), np.float32)
    flow[1, 1, 0] = np.nan
    flow[0, 0, 1] = np.inf
    out = warp(img, flow)
    assert out[1, 1] == 0 and out[0, 0] == 0 and out.sum() == 9 * 7


def test_warp_errors():
    flow = np.zeros((3, 3, 2))
    with pytest.raises(InputError, match=r"dtype one of .* got shape \(3, 3\) dtype int32"):
        warp(np.zeros((3, 3), np.int32), flow)
    with pytest.raises(InputError, match=r"image shape \(3, 4\) vs flow shape \(3, 3, 2\)"):
        warp(np.zeros((3, 4), np.uint8), flow)
    with pytest.raises(InputError, match=r"border must be one of \['constant', 'replicate'\], got 'wrap'"):
        warp(np.zeros((3, 3), np.uint8), flow, border="wrap")
    with pytest.raises(InputError, match=r"flow must be .* got shape \(3, 3\)"):
        warp(np.zeros((3, 3), np.uint8), np.zeros((3, 3)))
