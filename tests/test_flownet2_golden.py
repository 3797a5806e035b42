"""FlowNet2 family: parity with NVIDIA flownet2-pytorch, checkpoint layouts, input protocol."""
from __future__ import annotations

import json

import numpy as np
import pytest

import cvflow
from cvflow.backends import threads
from cvflow.backends.base import nest
from cvflow.models.base import REGISTRY
from cvflow.models.flownet2 import CONFIGS, chain_param_shapes, forward, normalize, resized_call
from conftest import GOLDEN, assert_parity, case_ids, case_weights, golden_flow, load_frames, need_shared

FAMILY = "flownet2"


def _manifest(model):
    need_shared()
    path = GOLDEN / FAMILY / f"manifest_{model}.json"
    if not path.is_file():
        pytest.skip(f"no manifest at {path}")
    return {t["key"]: tuple(t["shape"]) for t in json.loads(path.read_text())["tensors"]}


def _random_weights(shapes, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for key, shape in shapes.items():
        fan = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        u = 2 * rng.random(shape, dtype=np.float32) - 1
        out[key] = u * np.float32(np.sqrt(3.0 / fan) if len(shape) > 1 else 0.05)
    return out


@pytest.mark.parametrize("case", case_ids(FAMILY), ids=lambda c: c and c["name"])
def test_golden_parity(case):
    of = cvflow.create(case["model"], weights=case_weights(FAMILY, case), device="cpu")
    frame0, frame1 = load_frames(case)
    assert_parity(of.calc(frame0, frame1, None), golden_flow(FAMILY, case))


@pytest.mark.parametrize("model", ["flownet2-s", "flownet2-c", "flownet2-sd", "flownet2-css", "flownet2"])
def test_param_shapes_match_release_layout(model):
    assert chain_param_shapes(CONFIGS[model]) == _manifest(model)


@pytest.mark.parametrize("alias, release", [("flownets", "flownet2-s"), ("flownetc", "flownet2-c")])
def test_architecture_names_share_the_release_layout(alias, release):
    a, b = REGISTRY[alias], REGISTRY[release]
    assert a.param_shapes(a.config) == b.param_shapes(b.config)
    assert a.checkpoint == b.checkpoint


def test_checkpoint_names():
    names = {m: REGISTRY[m].checkpoint for m in CONFIGS}
    assert names == {
        "flownet2": "FlowNet2_checkpoint.pth.tar", "flownet2-c": "FlowNet2-C_checkpoint.pth.tar",
        "flownet2-s": "FlowNet2-S_checkpoint.pth.tar", "flownet2-sd": "FlowNet2-SD_checkpoint.pth.tar",
        "flownet2-cs": "FlowNet2-CS_checkpoint.pth.tar", "flownet2-css": "FlowNet2-CSS_checkpoint.pth.tar",
    }


def test_flownet2_cs_layout_is_css_without_second_s():
    css = _manifest("flownet2-css")
    expected = {k: v for k, v in css.items() if not k.startswith("flownets_2.")}
    assert chain_param_shapes(CONFIGS["flownet2-cs"]) == expected


def test_flownet2_cs_runs():
    weights = _random_weights(chain_param_shapes(CONFIGS["flownet2-cs"]))
    rng = np.random.default_rng(1)
    frame0 = rng.integers(0, 256, (64, 128, 3), dtype=np.uint8)
    frame1 = np.roll(frame0, 2, axis=1)
    flow = cvflow.create("flownet2-cs", weights=weights, device="cpu").calc(frame0, frame1, None)
    assert flow.shape == (64, 128, 2) and flow.dtype == np.float32
    assert np.isfinite(flow).all() and np.abs(flow).max() > 0


def test_non_multiple_of_64_frames_give_flow_at_frame_size():
    weights = _random_weights(chain_param_shapes(CONFIGS["flownet2-s"]), seed=2)
    rng = np.random.default_rng(3)
    frame0 = rng.integers(0, 256, (50, 90, 3), dtype=np.uint8)
    flow = cvflow.create("flownet2-s", weights=weights, device="cpu").calc(frame0, frame0[::-1].copy(), None)
    assert flow.shape == (50, 90, 2) and np.isfinite(flow).all()


def test_normalize_is_rgb_minus_joint_channel_mean_over_255():
    rng = np.random.default_rng(4)
    img0 = rng.uniform(0, 255, (8, 12, 3)).astype(np.float32)
    img1 = rng.uniform(0, 255, (8, 12, 3)).astype(np.float32)
    x = normalize(img0, img1)
    assert x.shape == (1, 8, 12, 6) and x.dtype == np.float32
    mean = np.concatenate([img0, img1]).reshape(-1, 3).mean(axis=0)
    np.testing.assert_allclose(x[0, ..., :3], (img0[..., ::-1] - mean[::-1]) / 255, atol=1e-6)
    np.testing.assert_allclose(x[0, ..., 3:], (img1[..., ::-1] - mean[::-1]) / 255, atol=1e-6)
    np.testing.assert_allclose(x[0].reshape(-1, 2, 3).mean(axis=(0, 1)), 0, atol=1e-6)


@pytest.mark.parametrize("h, w", [(50, 90), (64, 100), (130, 64), (1, 1)])
def test_resize_rescales_each_flow_axis(h, w):
    """A model seeing a texture translated by (tx, ty) px in the original frames sees
    (tx * W64/W, ty * H64/H) in the resized ones; the flow must come back as (tx, ty)."""
    tx, ty = 3.5, -2.25
    seen = []

    def model(x):
        _, h64, w64, _ = x.shape
        seen.append((h64, w64))
        flow = np.empty((1, h64, w64, 2), np.float32)
        flow[..., 0], flow[..., 1] = tx * w64 / w, ty * h64 / h
        return flow

    flow = resized_call(model, np.zeros((1, h, w, 6), np.float32))
    h64, w64 = seen[0]
    assert h64 % 64 == 0 and w64 % 64 == 0 and h64 - 64 < h <= h64 and w64 - 64 < w <= w64
    assert flow.shape == (1, h, w, 2)
    np.testing.assert_allclose(flow[..., 0], tx, rtol=1e-5)
    np.testing.assert_allclose(flow[..., 1], ty, rtol=1e-5)


def test_resize_is_skipped_at_multiples_of_64():
    x = np.random.default_rng(5).standard_normal((1, 64, 128, 6)).astype(np.float32)
    out = resized_call(lambda t: t[..., :2] if t is x else None, x)
    assert out is not None and np.array_equal(out, x[..., :2])


def test_resize_brings_a_spatial_flow_back_to_frame_coordinates():
    """A flow field that is a smooth function of position survives the round trip."""
    h, w = 96, 150

    def model(x):
        _, h64, w64, _ = x.shape
        yy, xx = np.meshgrid(np.arange(h64) + 0.5, np.arange(w64) + 0.5, indexing="ij")
        # Flow of a zoom about the origin, in resized px: proportional to position.
        return np.stack([0.1 * xx, 0.1 * yy], axis=-1)[None].astype(np.float32)

    flow = resized_call(model, np.zeros((1, h, w, 6), np.float32))[0]
    yy, xx = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
    inner = (slice(2, -2), slice(2, -2))  # bilinear clamping at the border
    np.testing.assert_allclose(flow[..., 0][inner], 0.1 * xx[inner], rtol=1e-4)
    np.testing.assert_allclose(flow[..., 1][inner], 0.1 * yy[inner], rtol=1e-4)


def test_forward_direct_matches_create():
    """The registered forward, called with nested weights, is what `calc` runs."""
    weights = _random_weights(chain_param_shapes(CONFIGS["flownet2-c"]), seed=6)
    rng = np.random.default_rng(7)
    f0 = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    f1 = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    # Both at one thread: how cvflow's pool splits a product depends on the thread count,
    # and OpenBLAS rounds each piece by its shape (~1e-6 here).
    with threads.limited(1):
        direct = forward(nest(weights), f0.astype(np.float32), f1.astype(np.float32), CONFIGS["flownet2-c"], {})
    via = cvflow.create("flownet2-c", weights=weights, device="cpu", threads=1).calc(f0, f1, None)
    np.testing.assert_allclose(direct, via, rtol=1e-6, atol=1e-6)
