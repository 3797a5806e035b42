"""calcBidirectional for every model (backward = forward of the swapped pair) and
occlusion_mask on a constructed scene with known occlusions."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cvflow
from cvflow.arrays import to_numpy
from cvflow.models.base import REGISTRY, ModelDef, register
from conftest import GOLDEN, case_weights, golden_cases, load_frames, need_shared

# model -> (golden family, golden case's model whose weights and frames it uses, frame crop, options)
_SOURCES = {
    "raft": ("raft", "raft", (100, 150), {"iters": 3}),
    "raft-small": ("raft", "raft-small", (100, 150), {"iters": 3}),
    "flownet2-s": ("flownet2", "flownet2-s", (60, 120), {}),
    "flownets": ("flownet2", "flownet2-s", (60, 120), {}),
    "flownet2-c": ("flownet2", "flownet2-c", (60, 120), {}),
    "flownetc": ("flownet2", "flownet2-c", (60, 120), {}),
    "flownet2-sd": ("flownet2", "flownet2-sd", (60, 120), {}),
    "flownet2-cs": ("flownet2", "flownet2-css", (60, 120), {}),   # the CSS weights less its second S
    "flownet2-css": ("flownet2", "flownet2-css", (60, 120), {}),
    "flownet2": ("flownet2", "flownet2", (64, 128), {}),
    "gmflow": ("gmflow", "gmflow", (60, 100), {}),
    "gmflow-refine": ("gmflow", "gmflow-refine", (60, 100), {}),
    "neuflow2": ("neuflow2", "neuflow2", (60, 100), {}),
}


def test_every_model_is_covered():
    builtin = {m for m in cvflow.list_models() if REGISTRY[m].family in ("raft", "flownet2", "gmflow", "neuflow2")}
    assert builtin == set(_SOURCES)


def _weights(family, model):  # not cached: FlowNet2's weights alone are 650 MB
    case = next(c for c in golden_cases(family) if c["model"] == model)
    return case_weights(family, case)


def _setup(name, device="cpu"):
    need_shared()
    family, source, (h, w), options = _SOURCES[name]
    case = next((c for c in golden_cases(family) if c["model"] == source), None)
    if case is None:
        pytest.skip(f"no golden {source} case in {GOLDEN / family}")
    weights = _weights(family, source)
    if name == "flownet2-cs":
        weights = {k: v for k, v in weights.items() if not k.startswith("flownets_2.")}
    f0, f1 = (np.ascontiguousarray(f[:h, :w]) for f in load_frames(case))
    return cvflow.create(name, weights=weights, device=device, **options), f0, f1


@pytest.mark.parametrize("name", sorted(_SOURCES))
def test_backward_equals_forward_of_swapped_pair(name):
    algo, f0, f1 = _setup(name)
    both = algo.calcBidirectional(f0, f1)
    assert type(both) is tuple and len(both) == 2
    fw, bw = both
    assert all(f.shape == f0.shape[:2] + (2,) and f.dtype == np.float32 for f in both)
    assert np.abs(fw - algo.calc(f0, f1)).max() <= 1e-4
    assert np.abs(bw - algo.calc(f1, f0)).max() <= 1e-4
    assert np.abs(bw).max() > 0.1 and np.abs(bw - fw).max() > 0.1   # real, distinct flows


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["raft-small", "flownet2-c", "gmflow-refine"])
def test_backward_equals_forward_of_swapped_pair_on_the_gpu(name):
    algo, f0, f1 = _setup(name, device="cuda")
    fw, bw, occ0, occ1 = algo.calcBidirectional(f0, f1, occlusion=True)
    assert all(type(a) is np.ndarray for a in (fw, bw, occ0, occ1))   # NumPy frames in, NumPy out
    assert np.abs(fw - algo.calc(f0, f1)).max() <= 1e-4
    assert np.abs(bw - algo.calc(f1, f0)).max() <= 1e-4


@pytest.mark.parametrize("name", ["raft", "raft-small"])
def test_raft_directions_as_one_batch_agree(name):
    """The batch-of-two refinement (a GPU backend's choice, `batch_passes`) on the CPU."""
    algo, f0, f1 = _setup(name)
    if name == "raft":
        # RAFT's synthetic weights are chaotic: float32 rounding grows ~3x per update. A batch
        # of two runs its products at other shapes, and OpenBLAS rounds by shape (and thread
        # count): measured on a 2-core AMD EPYC, batched vs one after the other 1.8e-5 / 7e-5 /
        # 1.5e-4 px after 1 / 2 / 3 updates, while the same sequential pass on 1 vs 2 BLAS
        # threads moves 5e-5 / 1.1e-4 / 3.7e-4 px. One update runs every batched step (a mixed-up
        # batch entry moves the flow by pixels) with the rounding still below the bar.
        algo.set("iters", 1)
    assert algo._backend.batch_passes is False       # the CPU runs one direction after the other
    fw, bw = algo.calcBidirectional(f0, f1)
    algo._backend.batch_passes = True
    batched_fw, batched_bw = algo.calcBidirectional(f0, f1)
    assert np.abs(batched_fw - fw).max() <= 1e-4 and np.abs(batched_bw - bw).max() <= 1e-4


def test_raft_bidirectional_on_the_cuda_emulator():
    from cvflow.testing import cuda_emulator

    need_shared()
    family, source, (h, w), options = _SOURCES["raft-small"]
    case = next((c for c in golden_cases(family) if c["model"] == source), None)
    if case is None:
        pytest.skip(f"no golden {source} case in {GOLDEN / family}")
    f0, f1 = (np.ascontiguousarray(f[:h, :w]) for f in load_frames(case))
    with cuda_emulator():
        algo = cvflow.create("raft-small", weights=_weights(family, source), device="cuda", iters=2)
        assert algo._backend.batch_passes is True
        fw, bw = algo.calcBidirectional(f0, f1)
        assert np.abs(fw - algo.calc(f0, f1)).max() <= 1e-4
        assert np.abs(bw - algo.calc(f1, f0)).max() <= 1e-4


def test_raft_on_the_fly_correlation_shares_nothing_but_agrees():
    algo, f0, f1 = _setup("raft-small")
    fw, bw = algo.calcBidirectional(f0, f1)
    algo.set("corr_budget", 1)
    lazy_fw, lazy_bw = algo.calcBidirectional(f0, f1)
    assert np.abs(lazy_fw - fw).max() <= 1e-4 and np.abs(lazy_bw - bw).max() <= 1e-4


def test_occlusion_option_adds_both_masks():
    algo, f0, f1 = _setup("raft-small")
    fw, bw, occ0, occ1 = algo.calcBidirectional(f0, f1, occlusion=True)
    assert occ0.shape == occ1.shape == f0.shape[:2] and occ0.dtype == occ1.dtype == np.bool_
    np.testing.assert_array_equal(occ0, cvflow.occlusion_mask(fw, bw))
    np.testing.assert_array_equal(occ1, cvflow.occlusion_mask(bw, fw))


# -- models without forward_both: calc twice ----------------------------------------------

def _shift_forward(params, img0, img1, config, options, init_flow):
    # a flow that depends on the frames' order: the mean brightness difference
    d = float(img1.mean() - img0.mean())
    return np.broadcast_to(np.float32([d, 2 * d]) * params["gain"], img0.shape[:2] + (2,)).copy()


@pytest.fixture(scope="module")
def plain_model():
    model = register(ModelDef(name="test-bidir-plain", family="test", config={},
                              param_shapes=lambda c: {"gain": (2,)}, forward=_shift_forward))
    yield cvflow.create(model.name, weights={"gain": np.ones(2, np.float32)}, device="cpu")
    REGISTRY.pop(model.name, None)


def test_model_without_shared_pass_runs_both_directions(plain_model):
    f0 = np.full((8, 10, 3), 10, np.uint8)
    f1 = np.full((8, 10, 3), 13, np.uint8)
    fw, bw = plain_model.calcBidirectional(f0, f1)
    np.testing.assert_allclose(fw[0, 0], [3, 6])
    np.testing.assert_allclose(bw[0, 0], [-3, -6])


@pytest.mark.parametrize("occlusion, err, match", [
    ("yes", TypeError, "`occlusion` must be a bool, got 'yes'"),
    (1, TypeError, "`occlusion` must be a bool, got 1"),
])
def test_calc_bidirectional_bad_occlusion(plain_model, occlusion, err, match):
    f = np.zeros((8, 10, 3), np.uint8)
    with pytest.raises(err, match=match):
        plain_model.calcBidirectional(f, f, occlusion=occlusion)


def test_calc_bidirectional_checks_frames(plain_model):
    f = np.zeros((8, 10, 3), np.uint8)
    with pytest.raises(ValueError, match=r"`I1` must be a 2-D or 3-D uint8/float array.*got shape \(8, 10, 4\)"):
        plain_model.calcBidirectional(f, np.zeros((8, 10, 4), np.uint8))


# -- occlusion_mask on a constructed scene --------------------------------------------------

H, W = 96, 128
SQUARE = (24, 40, 40)          # y0, x0, side in frame 0
SQUARE_MOTION = (8.0, 6.0)     # (dx, dy) px
BG_MOTION = (1.5, -0.5)        # the background pans too, by a fractional amount


def _in_square(xs, ys):
    y0, x0, s = SQUARE
    return (xs >= x0) & (xs < x0 + s) & (ys >= y0) & (ys < y0 + s)


def _scene():
    """Frames of a textured square moving over a textured, panning background, with the
    true flows both ways and the true masks: pixels of frame 0 covered in frame 1, and
    pixels of frame 1 uncovered (not in frame 0)."""
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    sq, bg = np.float32(SQUARE_MOTION), np.float32(BG_MOTION)
    in0 = _in_square(xs, ys)
    in1 = _in_square(xs - sq[0], ys - sq[1])
    fw = np.where(in0[..., None], sq, bg).astype(np.float32)
    bw = np.where(in1[..., None], -sq, -bg).astype(np.float32)
    covered = ~in0 & _in_square(xs + bg[0] - sq[0], ys + bg[1] - sq[1])  # lands in the moved square
    uncovered = ~in1 & _in_square(xs - bg[0], ys - bg[1])
    texture = cv2.GaussianBlur(rng.uniform(0, 255, (H + 20, W + 20)).astype(np.float32), (0, 0), 2.5)
    patch = cv2.GaussianBlur(rng.uniform(0, 255, (H, W)).astype(np.float32), (0, 0), 2.5)

    def render(bg_shift, sq_shift):
        back = cv2.remap(texture, xs + 10 - bg_shift[0], ys + 10 - bg_shift[1], cv2.INTER_LINEAR)
        front = cv2.remap(patch, xs - sq_shift[0], ys - sq_shift[1], cv2.INTER_LINEAR)
        inside = _in_square(xs - sq_shift[0], ys - sq_shift[1])
        return np.where(inside, front, back)

    frame0, frame1 = render((0, 0), (0, 0)), render(bg, sq)
    return frame0, frame1, fw, bw, covered, uncovered


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


def test_scene_flows_are_true():
    """The constructed flows do map frame 1 onto frame 0 wherever nothing is occluded."""
    frame0, frame1, fw, bw, covered, uncovered = _scene()
    inner = np.zeros((H, W), bool)
    inner[4:-4, 4:-4] = True
    for src, dst, flow, occ in ((frame1, frame0, fw, covered), (frame0, frame1, bw, uncovered)):
        err = np.abs(cvflow.warp(src, flow) - dst)
        assert occ.sum() > 300
        # (the median: the mean would count the 1-px band where samples straddle the square's edge,
        # and bilinear interpolation twice (rendering, warping) smooths the fine texture)
        assert np.median(err[inner & ~occ]) < np.median(err[occ]) / 5


def test_occlusion_mask_finds_covered_and_uncovered_regions(xp):
    _, _, fw, bw, covered, uncovered = _scene()
    fw, bw = xp.asarray(fw), xp.asarray(bw)
    for mask, truth in ((cvflow.occlusion_mask(fw, bw), covered), (cvflow.occlusion_mask(bw, fw), uncovered)):
        assert mask.shape == (H, W) and mask.dtype == np.bool_ and type(mask) is type(fw)
        mask = to_numpy(mask)
        assert _iou(mask, truth) >= 0.8
        assert mask[~truth].mean() < 0.01


def test_occlusion_thresholds():
    _, _, fw, bw, covered, _ = _scene()
    assert not cvflow.occlusion_mask(fw, bw, a=0, b=1e6).any()
    loose, strict = cvflow.occlusion_mask(fw, bw, b=5.0), cvflow.occlusion_mask(fw, bw, b=0.01)
    assert not (loose & ~strict).any() and strict.sum() >= loose.sum()


@settings(max_examples=40, deadline=None)
@given(dx=st.floats(-20, 20), dy=st.floats(-20, 20), h=st.integers(1, 12), w=st.integers(1, 12))
def test_consistent_translation_marks_nothing(dx, dy, h, w):
    fw = np.broadcast_to(np.float32([dx, dy]), (h, w, 2))
    assert not cvflow.occlusion_mask(fw, -fw).any()


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), a=st.floats(0, 1), b=st.floats(0, 10))
def test_mask_grows_as_thresholds_shrink(seed, a, b):
    rng = np.random.default_rng(seed)
    fw, bw = (rng.normal(0, 3, (6, 7, 2)).astype(np.float32) for _ in range(2))
    tight, loose = cvflow.occlusion_mask(fw, bw, a=a / 2, b=b / 2), cvflow.occlusion_mask(fw, bw, a=a, b=b)
    assert not (loose & ~tight).any()


@pytest.mark.parametrize("fw, bw, kw, err, match", [
    (np.zeros((4, 5, 3), np.float32), np.zeros((4, 5, 2), np.float32), {}, ValueError,
     r"`fw` must be an \(H, W, 2\) float flow array, got shape \(4, 5, 3\) float32"),
    (np.zeros((4, 5, 2), np.float32), np.zeros((4, 5, 2), np.int32), {}, ValueError,
     r"`bw` must be an \(H, W, 2\) float flow array, got shape \(4, 5, 2\) int32"),
    (np.zeros((4, 5, 2), np.float32), [[0.0]], {}, ValueError, "`bw` must be an .* got list"),
    (np.zeros((4, 5, 2), np.float32), np.zeros((4, 6, 2), np.float32), {}, ValueError,
     r"same shape, got shape \(4, 5, 2\) float32 and shape \(4, 6, 2\) float32"),
    (np.full((4, 5, 2), np.nan, np.float32), np.zeros((4, 5, 2), np.float32), {}, ValueError,
     "`fw` contains NaN or Inf"),
    (np.zeros((4, 5, 2), np.float32), np.zeros((4, 5, 2), np.float32), {"a": -1}, ValueError,
     "`a` must be a finite number >= 0, got -1"),
    (np.zeros((4, 5, 2), np.float32), np.zeros((4, 5, 2), np.float32), {"b": float("inf")}, ValueError,
     "`b` must be a finite number >= 0, got inf"),
    (np.zeros((4, 5, 2), np.float32), np.zeros((4, 5, 2), np.float32), {"b": "1"}, TypeError,
     "`b` must be a number, got '1'"),
])
def test_occlusion_mask_errors(fw, bw, kw, err, match):
    with pytest.raises(err, match=match) as exc:
        cvflow.occlusion_mask(fw, bw, **kw)
    assert isinstance(exc.value, cvflow.CvflowError)
