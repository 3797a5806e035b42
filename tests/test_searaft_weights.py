"""SEA-RAFT's weight files: the authors' .pth through the restricted unpickler, both
BatchNorm layouts, HuggingFace-style safetensors (only `bn3`), `cvflow convert`, the
registry entries and the error for missing weights; the uncertainty API's errors."""
from __future__ import annotations

import json
import struct
import subprocess
import sys

import numpy as np
import pytest

import cvflow
from cvflow.api import get_model
from cvflow.errors import InputError, WeightsError
from cvflow.io.checkpoint import load_weights
from cvflow.io.safetensors import read_safetensors
from cvflow.weights import describe_weights, registry_entry
from conftest import GOLDEN, ROOT, SHARED, golden_cases, load_frames, need_shared
from test_searaft_golden import _golden_run, synthetic

PTH = SHARED / "weights" / "searaft_s_synth31.pth"
CROP = "searaft-s_synth31_sintel_crop"


def write_safetensors(path, arrays, dtype="F32"):
    """A minimal safetensors writer (the format's spec: u64 header length, JSON, bytes)."""
    np_dtype = {"F32": "<f4", "F16": "<f2"}[dtype]
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for key, value in arrays.items():
        b = np.ascontiguousarray(value, dtype=np_dtype if value.dtype.kind == "f" else "<i8").tobytes()
        header[key] = {"dtype": dtype if value.dtype.kind == "f" else "I64", "shape": list(value.shape),
                       "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))
    return path


def _in_use(weights):
    """The synthetic arrays as the authors' model holds them after load_state_dict:
    bn3.* equal to downsample.1.* (the value applied last)."""
    return {k: weights[k.replace(".bn3.", ".downsample.1.")] if ".bn3." in k else v for k, v in weights.items()}


def _crop_flow(weights):
    case = next(c for c in golden_cases("searaft") if c["name"] == CROP)
    frame0, frame1 = load_frames(case)
    return cvflow.create("searaft-s", weights=weights, device="cpu").calc(frame0, frame1, None)


def test_authors_pth_loads_through_the_restricted_unpickler_and_equals_the_recipe():
    need_shared()
    if not PTH.is_file():
        pytest.skip(f"{PTH} not in ../shared")
    manifest = json.loads((GOLDEN / "searaft" / "manifest_searaft-s.json").read_text())
    alias = manifest["aliases"]["effective_source"]
    flat, synth = load_weights(PTH), synthetic("searaft-s")
    assert set(flat) == set(synth) and len(flat) == 276
    for key, value in flat.items():
        np.testing.assert_array_equal(value, synth[alias.get(key, key)], err_msg=key)
    np.testing.assert_array_equal(_crop_flow(str(PTH)), _golden_run(CROP)[0])


@pytest.mark.parametrize("keep", ["bn3", "downsample.1"])
def test_safetensors_with_one_batchnorm_layout_gives_the_same_flow(tmp_path, keep):
    need_shared()
    drop = ".downsample.1." if keep == "bn3" else ".bn3."
    weights = {k: v for k, v in _in_use(synthetic("searaft-s")).items() if drop not in k}
    path = write_safetensors(tmp_path / "model.safetensors", weights)
    assert set(read_safetensors(path)) == set(weights)
    np.testing.assert_array_equal(_crop_flow(str(path)), _golden_run(CROP)[0])


def test_safetensors_reader_keeps_values_and_refuses_bad_files(tmp_path):
    arrays = {"a.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "n": np.array(3, np.int64)}
    got = read_safetensors(write_safetensors(tmp_path / "ok.safetensors", arrays))
    np.testing.assert_array_equal(got["a.weight"], arrays["a.weight"])
    assert got["n"] == 3 and got["a.weight"].dtype == np.float32
    half = read_safetensors(write_safetensors(tmp_path / "h.safetensors", {"x": np.ones(3, np.float32)}, "F16"))
    assert half["x"].dtype == np.float16 and (half["x"] == 1).all()
    good = (tmp_path / "ok.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(good[:-4])
    with pytest.raises(WeightsError, match=r"cut.safetensors: tensor 'n' \(I64, shape \(\)\) does not match its bytes"):
        load_weights(tmp_path / "cut.safetensors")
    bad = bytearray(good)
    at = 8 + good[8:].index(b'"F32"') + 1
    bad[at:at + 3] = b"X32"
    (tmp_path / "dtype.safetensors").write_bytes(bytes(bad))
    with pytest.raises(WeightsError, match=r"tensor 'a.weight' has dtype 'X32'; supported: F64, F32"):
        load_weights(tmp_path / "dtype.safetensors")


def test_convert_to_npz_and_load(tmp_path):
    need_shared()
    if not PTH.is_file():
        pytest.skip(f"{PTH} not in ../shared")
    dst = tmp_path / "searaft_s.npz"
    res = subprocess.run([sys.executable, "-m", "cvflow", "convert", str(PTH), str(dst), "-m", "searaft-s"],
                         cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    flat = load_weights(dst)
    for key, value in load_weights(PTH).items():
        np.testing.assert_array_equal(flat[key], value)


def test_registry_entries_and_missing_weights_message(tmp_path, monkeypatch):
    monkeypatch.setenv("CVFLOW_HOME", str(tmp_path))
    for model, file in (("searaft-s", "Tartan-C-T-TSKH432x960-S.pth"), ("searaft-m", "Tartan-C-T-TSKH432x960-M.pth"),
                        ("searaft-l", "Tartan-C-T-TSKH432x960-M.pth")):
        entry = registry_entry(model)
        assert entry["file"] == file and entry["license"].startswith("BSD-3-Clause") and entry["url"] is None
        assert describe_weights(model)["default"] == file
        with pytest.raises(WeightsError, match=rf"(?s)no weights for model '{model}': {file} is not in {tmp_path}.*"
                                               rf"get it from: .*princeton-vl/SEA-RAFT.*put it at: {tmp_path / file}"):
            cvflow.create(model, device="cpu")


def test_uncertainty_errors():
    weights = {k: np.zeros(s, np.float32) for k, s in
               get_model("searaft-s").param_shapes(get_model("searaft-s").config).items()}
    of = cvflow.create("searaft-s", weights=weights, device="cpu")
    with pytest.raises(InputError, match=r"no uncertainty yet: call calc\(I0, I1\) on this 'searaft-s' object first"):
        of.getUncertainty()
    frame = np.zeros((64, 96, 3), np.uint8)
    flow = of.calc(frame, frame, None)
    assert flow.shape == (64, 96, 2) and flow.flags.c_contiguous
    assert of.getUncertainty().shape == (64, 96) and of.getInfo().shape == (64, 96, 4)
    raft = get_model("raft-small")
    small = cvflow.create("raft-small", weights={k: np.zeros(s, np.float32) for k, s in
                                                 raft.param_shapes(raft.config).items()}, device="cpu")
    with pytest.raises(InputError, match=r"model 'raft-small' predicts no uncertainty; models that do: "
                                         r"searaft-l, searaft-m, searaft-s"):
        small.getUncertainty()


def test_cli_flow_writes_the_uncertainty_picture(tmp_path):
    need_shared()
    weights = tmp_path / "s.npz"
    cvflow.save_converted(synthetic("searaft-s"), weights)
    frames = [str(SHARED / "data" / "sintel_market_2" / f"frame_00{i}.png") for i in (16, 17)]
    out, unc = tmp_path / "f.flo", tmp_path / "unc.png"
    res = subprocess.run([sys.executable, "-m", "cvflow", "flow", *frames, "-m", "searaft-s", "--weights", str(weights),
                          "-o", str(out), "--uncertainty", str(unc), "--device", "cpu"],
                         cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    import cv2

    img = cv2.imread(str(unc))
    assert img.shape == (436, 1024, 3) and "expected flow error" in res.stdout
    res = subprocess.run([sys.executable, "-m", "cvflow", "flow", *frames, "-m", "raft-small", "-o", str(out),
                          "--uncertainty", str(unc)], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 2
    assert "--uncertainty: model 'raft-small' predicts no uncertainty; models that do: searaft-l" in res.stderr


def test_uncertainty_to_color():
    unc = np.array([[1.0, 2.0], [np.nan, 1e6]], np.float32)
    img = cvflow.uncertainty_to_color(unc, max_value=2.0)
    assert img.shape == (2, 2, 3) and img.dtype == np.uint8
    assert (img[1, 0] == 0).all() and (img[0, 1] == img[1, 1]).all() and img[0, 1].sum() > img[0, 0].sum()
    assert cvflow.uncertainty_to_color(unc).shape == (2, 2, 3)
    with pytest.raises(InputError, match=r"uncertainty must be a non-empty \(H, W\) real array, got shape \(2, 2, 1\)"):
        cvflow.uncertainty_to_color(unc[..., None])
    with pytest.raises(InputError, match=r"max_value must be a positive finite number or None, got -1"):
        cvflow.uncertainty_to_color(unc, max_value=-1)
