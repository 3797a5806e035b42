"""The algorithm object and `create`, exercised with a registered test model."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import cvflow
from cvflow.models.base import REGISTRY, ModelDef, register


def _shapes(config):
    return {"gain": (2,)}


def _forward(params, img0, img1, config, options, init_flow):
    h, w = img0.shape[:2]
    if min(h, w) < config["need"]:
        raise RuntimeError("model called below its minimum size")
    flow = np.zeros((h, w, 2), np.float32) + params["gain"] * options["iters"]
    flow[..., 0] += (img1.mean() - img0.mean()) / 255.0
    if init_flow is not None:
        flow += init_flow
    return flow


@pytest.fixture(autouse=True, scope="module")
def test_model():
    model = register(ModelDef(name="test-constant", family="test", config={"need": 16},
                              param_shapes=_shapes, forward=_forward,
                              options={"iters": 3, "warm_start": False}, min_size=16))
    yield model
    REGISTRY.pop(model.name, None)


WEIGHTS = {"gain": np.array([0.5, -1.0], np.float32)}


def make(**kw):
    return cvflow.create("test-constant", weights=WEIGHTS, device="cpu", **kw)


def frames(h=20, w=30, c=3, dtype=np.uint8):
    rng = np.random.default_rng(0)
    shape = (h, w, c) if c else (h, w)
    return [rng.integers(0, 255, shape).astype(dtype) for _ in range(2)]


def test_calc_returns_float32_flow():
    f0, f1 = frames()
    flow = make().calc(f0, f1, None)
    assert flow.shape == (20, 30, 2) and flow.dtype == np.float32
    np.testing.assert_allclose(flow[..., 1], -3.0)


def test_gray_and_float_frames_match_bgr():
    f0, f1 = frames(c=0)
    algo = make()
    gray = algo.calc(f0, f1, None)
    bgr = algo.calc(np.dstack([f0] * 3), np.dstack([f1] * 3), None)
    flt = algo.calc(f0.astype(np.float32), f1.astype(np.float64), None)
    np.testing.assert_array_equal(gray, bgr)
    np.testing.assert_allclose(flt, gray, atol=1e-6)


def test_flow_argument_filled_in_place():
    f0, f1 = frames()
    out = np.full((20, 30, 2), 7, np.float32)
    res = make().calc(f0, f1, out)
    assert res is out
    np.testing.assert_allclose(out[..., 1], -3.0)


def test_flow_argument_of_other_shape_is_replaced():
    f0, f1 = frames()
    res = make().calc(f0, f1, np.zeros((3, 3, 2), np.float32))
    assert res.shape == (20, 30, 2)


def test_initial_flow_used_only_with_flag():
    f0, f1 = frames()
    algo = make()
    init = np.ones((20, 30, 2), np.float32)
    plain = algo.calc(f0, f1, init.copy())
    algo.setFlags(cvflow.OPTFLOW_USE_INITIAL_FLOW)
    assert algo.getFlags() == 4
    warm = algo.calc(f0, f1, init.copy())
    np.testing.assert_allclose(warm - plain, 1.0)
    with pytest.raises(ValueError, match=r"initial `flow` must be a \(20, 30, 2\) float32 array"):
        algo.calc(f0, f1, np.ones((20, 30, 2), np.float64))


def test_small_frames_are_padded_to_min_size():
    f0, f1 = frames(5, 7)
    flow = make().calc(f0, f1, None)
    assert flow.shape == (5, 7, 2) and np.isfinite(flow).all()


def test_options_getters_setters():
    algo = make(iters=5)
    assert algo.getIters() == 5
    algo.setIters(2)
    assert algo.get("iters") == 2 and algo.options["iters"] == 2
    assert "getIters" in dir(algo) and "setWarmStart" in dir(algo)
    with pytest.raises(ValueError, match="must be >= 1"):
        algo.setIters(0)
    with pytest.raises(TypeError, match="must be an int"):
        algo.setIters(1.5)
    with pytest.raises(TypeError, match="must be a bool"):
        algo.setWarmStart("yes")
    with pytest.raises(ValueError, match="has no option 'foo'; its options: iters, warm_start"):
        make(foo=1)
    with pytest.raises(AttributeError, match="no attribute 'getFoo'"):
        algo.getFoo()


def test_default_name_and_repr():
    algo = make()
    assert algo.getDefaultName() == "DenseOpticalFlow.cvflow.test-constant"
    assert "test-constant on cpu" in repr(algo)
    algo.collectGarbage()


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown model 'nope'; valid models: .*test-constant"):
        cvflow.create("nope")
    with pytest.raises(TypeError, match="model name must be a str"):
        cvflow.create(3)
    assert "test-constant" in cvflow.list_models()


@pytest.mark.parametrize("bad, msg", [
    (None, r"`I0` must be a 2-D or 3-D uint8/float array .*got NoneType"),
    (np.zeros((0, 0, 3), np.uint8), r"got shape \(0, 0, 3\) uint8"),
    (np.zeros((4, 4, 4), np.uint8), r"got shape \(4, 4, 4\) uint8"),
    (np.zeros((4, 4, 3), np.int32), r"got shape \(4, 4, 3\) int32"),
    (np.zeros((4, 4, 3), np.complex64), r"got shape \(4, 4, 3\) complex64"),
    (np.zeros((2, 4, 4, 3), np.uint8), r"got shape \(2, 4, 4, 3\) uint8"),
    (np.full((4, 4), np.nan, np.float32), r"`I0` contains NaN or Inf"),
    ([[1, 2], [3, 4]], r"got list"),
])
def test_bad_frames_raise(bad, msg):
    _, f1 = frames()
    with pytest.raises(ValueError, match=msg):
        make().calc(bad, f1, None)


def test_mismatched_frames_raise():
    f0, _ = frames()
    _, f1 = frames(21, 30)
    with pytest.raises(ValueError, match=r"same size, got shape \(20, 30, 3\) uint8 and shape \(21, 30, 3\) uint8"):
        make().calc(f0, f1, None)


def test_bad_device_raises():
    with pytest.raises(ValueError, match="`device` must be one of auto, cpu, cuda, got 'tpu'"):
        cvflow.create("test-constant", weights=WEIGHTS, device="tpu")


def test_errors_are_builtin_subclasses():
    assert issubclass(cvflow.InputError, ValueError)
    assert issubclass(cvflow.CvflowTypeError, TypeError)
    assert issubclass(cvflow.CvflowFileNotFoundError, FileNotFoundError)
    assert issubclass(cvflow.DownloadError, OSError)
    assert issubclass(cvflow.UnsafePickleError, cvflow.WeightsError)


def test_import_never_imports_cupy():
    code = ("import sys, cvflow; cvflow.list_models(); cvflow.create; "
            "assert 'cupy' not in sys.modules, 'cupy imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def _derived_keys(tree, path=""):
    """Paths of every cached derived entry (keys starting with "_") in a weight tree."""
    out = set()
    for key, value in tree.items():
        if key.startswith("_"):
            out.add(path + key)
        if isinstance(value, dict):
            out |= _derived_keys(value, f"{path}{key}.")
    return out


@pytest.mark.parametrize("name", ["raft-small", "flownet2-s", "gmflow", "neuflow2"])
def test_create_prepares_every_layer(name):
    """The first calc derives nothing new: create() did it (on a blank pair)."""
    cvflow.list_models()  # registers the built-in models
    model = REGISTRY[name]
    rng = np.random.default_rng(0)
    weights = {k: np.asarray(0.05 * rng.standard_normal(s) + k.endswith("running_var"), np.float32)
               for k, s in model.param_shapes(model.config).items()}  # 0-d arrays too; variances near 1
    algo = cvflow.create(name, weights=weights, device="cpu", **({"iters": 2} if "raft" in name else {}))
    before = algo._backend.prepared_count
    assert before
    a = rng.integers(0, 256, (136, 200, 3), dtype=np.uint8)
    algo.calc(a, np.roll(a, 2, axis=1), None)
    assert algo._backend.prepared_count == before
    assert not _derived_keys(algo._params)  # derived weights live in the backend, not the weights
