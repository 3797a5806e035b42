"""NeuFlow v2 against the authors' outputs (../shared/golden/neuflow2), on the CPU backend.

Every case through `create("neuflow2", weights=<synthetic arrays>).calc` on BGR frames,
and the crop's intermediates (backbone, cross-attention, matching, lookups, every
refinement) through the model's own functions. The CUDA backend's run of the same cases
is in test_cuda_golden.py.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import GOLDEN, assert_parity, case_ids, case_weights, golden_cases, golden_flow, load_frames, need_shared

import cvflow
from cvflow.api import get_model
from cvflow.backends.cpu import CPUBackend
from cvflow.models import neuflow2 as nf
from cvflow.weights import load_model_weights

FAMILY = "neuflow2"


def _manifest():
    path = GOLDEN / FAMILY / "manifest_neuflow2.json"
    if not path.is_file():
        pytest.skip(f"no NeuFlow v2 manifest at {path}")
    return json.loads(path.read_text())


def test_param_shapes_match_release_checkpoint():
    need_shared()
    manifest = _manifest()
    definition = get_model("neuflow2")
    shapes = definition.param_shapes(definition.config)
    assert shapes == {t["key"]: tuple(t["shape"]) for t in manifest["tensors"]}
    assert len(shapes) == 155
    for key, value in manifest["config"].items():
        assert definition.config[key] == value, key
    assert sum(int(np.prod(s)) for k, s in shapes.items() if "num_batches" not in k and "running" not in k) == 9029536


@pytest.mark.parametrize("case", case_ids(FAMILY), ids=lambda c: c["name"] if c else "none")
def test_golden_case(case):
    need_shared()
    f0, f1 = load_frames(case)
    opts = {"iters_s16": case["iters_s16"], "iters_s8": case["iters_s8"]}
    algo = cvflow.create("neuflow2", weights=case_weights(FAMILY, case), device="cpu", **opts)
    flow = algo.calc(f0, f1, None)
    assert flow.dtype == np.float32 and flow.shape == tuple(case["shape"])
    assert_parity(flow, golden_flow(FAMILY, case))


def _nchw(x):
    return np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2))


def _close(name, got, ref, atol):
    got = _nchw(got)
    assert got.shape == ref.shape, (name, got.shape, ref.shape)
    d = np.abs(got.astype(np.float64) - ref)
    assert d.max() <= atol, f"{name}: max |d| {d.max():.3g} > {atol}"


def test_intermediates_of_the_crop():
    """Each stage of the crop against the reference's module outputs (NCHW, padded frame)."""
    need_shared()
    case = next((c for c in golden_cases(FAMILY) if c.get("intermediates")), None)
    if case is None:
        pytest.skip("no NeuFlow v2 case with intermediates in ../shared")
    ref = np.load(GOLDEN / FAMILY / case["intermediates"])
    model = get_model("neuflow2")
    cfg = model.config
    be = CPUBackend()
    p = be.place(load_model_weights(model, case_weights(FAMILY, case)))
    f0, f1 = (f.astype(np.float32) for f in load_frames(case))
    frames, pads = nf._prepare(be, f0, f1, cfg["padding_factor"])
    assert frames.shape[1:3] == tuple(case["padded_shape"])
    assert pads == tuple(case["pad_left_right_top_bottom"][i] for i in (2, 3, 0, 1))

    x16, x8 = nf.backbone(be, p["backbone"], frames)
    _close("backbone#0", x16, ref["backbone#0"], 1e-3)
    x16 = nf.cross_attention(be, p["cross_attn_s16"], x16)
    _close("cross_attn_s16#0", x16, ref["cross_attn_s16#0"], 1e-3)

    c = cfg["context_dim_s16"]
    g0, g1 = np.ascontiguousarray(x16[:1, ..., c:]), np.ascontiguousarray(x16[1:, ..., c:])
    flow = be.global_matching(g0, g1)
    _close("_flow_s16_matching", flow, ref["_flow_s16_matching"], 1e-3)
    state = be.build_corr(g0, g1, 1)
    grid = nf._coords_grid(*flow.shape[:3])
    _close("_corr_s16#0", be.corr_lookup(state, grid + flow, 4), ref["_corr_s16#0"], 1e-3)
    ctx16 = be.relu(x16[:1, ..., :c])
    zeros = np.zeros((*flow.shape[:3], 64), np.float32)
    iter_ctx, delta = nf.refine(be, p["refine_s16"], be.corr_lookup(state, grid + flow, 4), ctx16, zeros, flow)
    _close("refine_s16#0", iter_ctx, ref["refine_s16#0"], 1e-3)
    flow = flow + delta
    _close("_flow_s16#0", flow, ref["_flow_s16#0"], 1e-3)

    shared = nf._features(be, p, frames, cfg)
    _close("merge_s8#0", shared[2], ref["merge_s8#0"], 1e-3)
    ctx8 = nf.merge(be, p["context_merge_s8"],
                    be.concat([be.relu(x8[:1, ..., :64]), be.upsample_nearest(ctx16, 2)]))
    _close("context_merge_s8#0", ctx8, ref["context_merge_s8#0"], 1e-3)
    flow = be.upsample_nearest(flow, 2) * np.float32(2)
    _close("_flow_s8_init", flow, ref["_flow_s8_init"], 1e-3)
    f8 = shared[2]
    state = be.build_corr(np.ascontiguousarray(f8[:1]), np.ascontiguousarray(f8[1:]), 1)
    grid = nf._coords_grid(*flow.shape[:3])
    iter_ctx = np.zeros((*flow.shape[:3], 64), np.float32)
    _close("_corr_s8#0", be.corr_lookup(state, grid + flow, 4), ref["_corr_s8#0"], 1e-3)
    for k in range(cfg["iters_s8"]):
        iter_ctx, delta = nf.refine(be, p["refine_s8"], be.corr_lookup(state, grid + flow, 4), ctx8, iter_ctx, flow)
        flow = flow + delta
        _close(f"_flow_s8#{k}", flow, ref[f"_flow_s8#{k}"], 1e-3)
    _close("_flow_low", flow, ref["_flow_low"], 1e-3)
    up = nf.upsample(be, p, frames[:1], flow, 8)
    golden = np.load(GOLDEN / FAMILY / case["output"])
    assert_parity(np.asarray(be.crop(up, pads)), golden)
