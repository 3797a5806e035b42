"""GMFlow and GMFlow with refinement against the authors' outputs (../shared/golden/gmflow)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import GOLDEN, assert_parity, case_ids, case_weights, golden_flow, load_frames, need_shared

import cvflow
from cvflow.api import get_model

FAMILY = "gmflow"


def _manifest(model):
    path = GOLDEN / FAMILY / f"manifest_{model}.json"
    if not path.is_file():
        pytest.skip(f"no GMFlow manifest at {path}")
    return json.loads(path.read_text())


@pytest.mark.parametrize("model", ["gmflow", "gmflow-refine"])
def test_param_shapes_match_release_checkpoint(model):
    need_shared()
    manifest = _manifest(model)
    definition = get_model(model)
    shapes = definition.param_shapes(definition.config)
    assert shapes == {t["key"]: tuple(t["shape"]) for t in manifest["tensors"]}
    for key, value in manifest["config"].items():
        assert definition.config[key] == value, key


@pytest.mark.parametrize("case", case_ids(FAMILY), ids=lambda c: c["name"] if c else "none")
def test_golden_case(case):
    need_shared()
    f0, f1 = load_frames(case)
    algo = cvflow.create(case["model"], weights=case_weights(FAMILY, case), device="cpu")
    flow = algo.calc(f0, f1, None)
    assert flow.dtype == np.float32
    assert_parity(flow, golden_flow(FAMILY, case))


@pytest.mark.parametrize("model", ["gmflow", "gmflow-refine"])
def test_backward_flow_equals_swapped_frames(model):
    """Bidirectional output: forward flow as usual, backward flow as if the frames were swapped."""
    need_shared()
    case = next(c for c in json.loads((GOLDEN / FAMILY / f"index_{FAMILY}.json").read_text())
                if c["model"] == model)
    f0, f1 = (f[:60, :100] for f in load_frames(case))   # small, not a padding multiple
    weights = case_weights(FAMILY, case)
    algo = cvflow.create(model, weights=weights, device="cpu")
    fw, swapped = algo.calc(f0, f1, None), algo.calc(f1, f0, None)
    both = algo.calcBidirectional(f0, f1)
    # the option on the object does not change what calc returns
    assert cvflow.create(model, weights=weights, device="cpu", bidirectional=True).calc(f0, f1).shape == fw.shape
    assert isinstance(both, tuple) and len(both) == 2
    assert all(f.shape == (60, 100, 2) and f.dtype == np.float32 for f in both)
    np.testing.assert_allclose(both[0], fw, atol=1e-4)
    np.testing.assert_allclose(both[1], swapped, atol=1e-4)
    assert np.abs(both[1]).max() > 0.1    # a real flow, not zeros
