"""RAFT weights in torchvision's key layout: the rename rules against torchvision's own key
list, parity with torchvision's forward through the public API, errors named in the file's
layout, `cvflow convert`, and the weight tags of the registry."""
from __future__ import annotations

import json

import numpy as np
import pytest

import cvflow
import cvflow.weights as cw
from cvflow.api import get_model
from cvflow.cli import main
from cvflow.errors import WeightsError
from cvflow.io import raft_layouts as rl
from cvflow.io.checkpoint import load_weights, save_converted
from cvflow.models.raft import CONFIGS, param_shapes
from conftest import GOLDEN, SHARED, assert_parity, load_frames, need_shared

TV = GOLDEN / "torchvision"
SMALL_TV = SHARED / "weights" / "raft_small_tv_layout.pth"
LARGE_TV = SHARED / "weights" / "raft_large_tv_random.pth"
SMALL_AUTHORS = SHARED / "weights" / "raft-small.pth"
MODELS = {"raft": "large", "raft-small": "small"}


def _need(path):
    need_shared()
    if not path.is_file():
        pytest.skip(f"{path} not found (../shared beside the project)")


def _golden_mapping(model):
    """{authors' key (no module.): torchvision key or None (dropped)} from torchvision's key list."""
    path = TV / f"raft_{MODELS[model]}_key_mapping.tsv"
    _need(path)
    rows = [line.rstrip("\n").split("\t") for line in path.read_text().splitlines()[1:] if line.strip()]
    return {a.removeprefix("module."): (None if t.startswith("(DROP") else t) for a, t, *_ in rows}


def _cases():
    index = TV / "index_torchvision.json"
    if not index.is_file():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"no golden data at {TV}"))]
    return json.loads(index.read_text())["cases"]


# --- rename rules -----------------------------------------------------------------------------

@pytest.mark.parametrize("model", sorted(MODELS))
def test_rules_map_every_key_as_torchvision_does(model):
    golden = _golden_mapping(model)
    shapes = param_shapes(CONFIGS[model])
    assert set(shapes) == set(golden)  # cvflow's key list is the authors' file's
    kept = {a: t for a, t in golden.items() if t is not None}
    tv = rl.authors_to_torchvision(shapes, check_aliases=False)
    assert sorted(tv) == sorted(kept.values())
    assert {t: tv[t] for t in kept.values()} == {t: shapes[a] for a, t in kept.items()}  # renames only
    back = rl.torchvision_to_authors(tv)
    assert back == shapes  # the dropped norm3 copies come back from downsample.1
    dropped = sorted(a for a, t in golden.items() if t is None)
    assert len(dropped) == (10 if model == "raft" else 0)
    assert all(".norm3." in a and a.startswith("cnet.") for a in dropped)


def test_detect_layout_from_keys_only():
    assert rl.detect_layout(["fnet.conv1.weight", "update_block.gru.convz.bias"]) == rl.AUTHORS
    assert rl.detect_layout(["feature_encoder.conv.weight", "mask_predictor.conv.bias"]) == rl.TORCHVISION
    assert rl.detect_layout(["backbone.conv1.weight"]) is None
    with pytest.raises(WeightsError, match="mix torchvision's RAFT key layout .*feature_encoder.conv.weight"):
        rl.detect_layout(["feature_encoder.conv.weight", "fnet.conv2.weight"])


def test_rename_errors():
    with pytest.raises(WeightsError, match=r"outside torchvision's RAFT layout \(1\): feature_encoder.extra.weight"):
        rl.torchvision_to_authors({"feature_encoder.conv.weight": 1, "feature_encoder.extra.weight": 2})
    with pytest.raises(WeightsError, match=r"outside the authors' RAFT layout \(1\): fnet.extra.weight"):
        rl.authors_to_torchvision({"fnet.conv2.weight": np.ones(1), "fnet.extra.weight": np.ones(1)})
    shapes = param_shapes(CONFIGS["raft"])
    w = {k: np.full(s, 0.5, np.float32) for k, s in shapes.items()}
    w["cnet.layer2.0.norm3.weight"] = w["cnet.layer2.0.norm3.weight"] + 1
    with pytest.raises(WeightsError, match="stored twice with different values: "
                                           r"cnet.layer2.0.norm3.weight != cnet.layer2.0.downsample.1.weight"):
        rl.authors_to_torchvision(w)


def test_large_file_round_trip():
    _need(LARGE_TV)
    tv = load_weights(LARGE_TV)
    au = rl.torchvision_to_authors(tv)
    assert len(tv) == 169 and len(au) == 179
    for block in ("cnet.layer2.0", "cnet.layer3.0"):
        for leaf in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            assert au[f"{block}.norm3.{leaf}"] is au[f"{block}.downsample.1.{leaf}"]
    back = rl.authors_to_torchvision(au)
    assert list(back) == list(tv) and all(back[k] is tv[k] for k in tv)


# --- the same tensors, whichever layout -------------------------------------------------------

def test_small_file_in_either_layout_gives_the_same_weights():
    _need(SMALL_TV)
    _need(SMALL_AUTHORS)
    model = get_model("raft-small")
    from_tv = cw.load_model_weights(model, SMALL_TV)
    from_authors = cw.load_model_weights(model, SMALL_AUTHORS)
    assert sorted(from_tv) == sorted(from_authors)
    for key, arr in from_authors.items():
        np.testing.assert_array_equal(from_tv[key], arr, err_msg=key)


@pytest.mark.parametrize("case", _cases(), ids=lambda c: c and c["name"])
def test_torchvision_golden_parity(case):
    """torchvision's own forward (its preprocessing equals the authors'), BGR frames through calc."""
    _need(SHARED / case["weights"])
    frame0, frame1 = load_frames(case)
    algo = cvflow.create(case["model"], weights=str(SHARED / case["weights"]), device="cpu", iters=case["iters"])
    assert_parity(algo.calc(frame0, frame1, None), np.load(TV / case["output"]))


# --- errors name the file's own keys ----------------------------------------------------------

def _error(model, weights):
    with pytest.raises(WeightsError) as info:
        cvflow.create(model, weights=weights, device="cpu")
    return str(info.value)


@pytest.mark.parametrize("model", sorted(MODELS))
def test_missing_or_misshaped_tensor_is_named_in_the_files_layout(model, tmp_path):
    shapes = param_shapes(CONFIGS[model])
    authors = {k: np.zeros(s, np.float32) for k, s in shapes.items()}
    tv = rl.authors_to_torchvision(authors)
    n_au, n_tv = len(authors), len(tv)
    for layout, w, missing, misshaped in (
            ("authors", authors, "update_block.encoder.conv.weight", "fnet.conv2.weight"),
            ("torchvision", tv, "update_block.motion_encoder.conv.0.weight", "feature_encoder.conv.weight")):
        n = len(w)
        cut = {k: v for k, v in w.items() if k != missing}
        save_converted(cut, tmp_path / f"{layout}-cut.npz")
        msg = _error(model, str(tmp_path / f"{layout}-cut.npz"))
        assert f"{n} tensors expected, {n - 1} given)" in msg and f"missing (1): {missing}" in msg
        assert "unexpected" not in msg and "wrong shape" not in msg
        bad = dict(w, **{misshaped: np.zeros((3, 3), np.float32)})
        msg = _error(model, bad)
        assert f"wrong shape (1): {misshaped} expected {shapes['fnet.conv2.weight']}, got (3, 3)" in msg
        assert "missing" not in msg
        assert ("torchvision's RAFT key layout" in msg) == (layout == "torchvision")
    assert n_au - n_tv == (10 if model == "raft" else 0)


def test_torchvision_file_for_the_other_model_is_refused():
    _need(SMALL_TV)
    msg = _error("raft", str(SMALL_TV))
    assert "weights do not match model 'raft' (torchvision's RAFT key layout, 169 tensors expected, 106 given)" in msg
    assert "wrong shape" in msg and "feature_encoder.convnormrelu.0.weight expected (64, 3, 7, 7)" in msg


# --- cvflow convert ---------------------------------------------------------------------------

@pytest.mark.parametrize("with_model", [True, False])
def test_convert_torchvision_file_to_cvflow_npz(tmp_path, capsys, with_model):
    _need(LARGE_TV)
    dst = tmp_path / "large.npz"
    argv = ["convert", str(LARGE_TV), str(dst)] + (["-m", "raft"] if with_model else [])
    assert main(argv) == 0 and "179 tensors" in capsys.readouterr().out
    converted = load_weights(dst)
    assert rl.detect_layout(converted) == rl.AUTHORS
    assert converted["cnet.norm1.num_batches_tracked"].shape == ()  # 0-d tensors stay 0-d
    expected = rl.torchvision_to_authors(load_weights(LARGE_TV))
    assert sorted(converted) == sorted(expected)
    for key in expected:
        np.testing.assert_array_equal(converted[key], expected[key])
    cvflow.create("raft", weights=str(dst), device="cpu", iters=1)


def test_convert_with_the_wrong_model_names_torchvision_keys(tmp_path, capsys):
    _need(SMALL_TV)
    assert main(["convert", str(SMALL_TV), str(tmp_path / "x.npz"), "-m", "raft"]) == 2
    err = capsys.readouterr().err
    assert "torchvision's RAFT key layout" in err and "feature_encoder.convnormrelu.0.weight" in err
    assert not (tmp_path / "x.npz").exists()


# --- tags -------------------------------------------------------------------------------------

def test_tags_of_the_registry():
    tv_meta = json.loads((TV / "torchvision_weights.json").read_text()) if TV.is_dir() else None
    for model, enum in (("raft", "Raft_Large_Weights"), ("raft-small", "Raft_Small_Weights")):
        tags = cw.model_tags(model)
        assert cw.default_tag(model) == {"raft": "C_T_SKHT_V2", "raft-small": "C_T_V2"}[model]
        assert sum(e["default"] for e in tags) == 1
        for e in tags:
            prefix = e["sha256_prefix"]
            assert e["file"].endswith(f"-{prefix}.pth") and len(prefix) == 8 and int(prefix, 16) >= 0
            assert e["url"] == f"https://download.pytorch.org/models/{e['file']}"
            assert e["license"].startswith("BSD-3-Clause") and e["data"] and e["metrics"]
            if tv_meta:
                published = tv_meta["enums"][enum][e["tag"]]
                assert (e["url"], e["metrics"], e["size_mb"]) == (published["url"], published["metrics"],
                                                                 published["file_size_mb"])
        if tv_meta:
            assert {e["tag"] for e in tags} == set(tv_meta["enums"][enum]) - {"DEFAULT"}
            assert cw.default_tag(model) == tv_meta["enums"][enum]["DEFAULT"]
    assert [e["tag"] for e in cw.model_tags("raft-small")] == ["C_T_V1", "C_T_V2"]
    assert cw.model_tags("gmflow") == [] and cw.default_tag("gmflow") is None
    assert cw.tag_entry("raft", "c_t_skht_v2")["file"] == "raft_large_C_T_SKHT_V2-ff5fadd5.pth"


def test_list_models_verbose_and_cli(capsys):
    rows = {m["name"]: m for m in cvflow.list_models(verbose=True)}
    assert sorted(rows) == cvflow.list_models()
    small = rows["raft-small"]
    assert small["default"] == "C_T_V2"
    assert [w["tag"] for w in small["weights"]] == ["C_T_V1", "C_T_V2", None]
    v2 = small["weights"][1]
    assert v2["default"] and v2["metrics"]["Sintel-Train-Cleanpass"]["epe"] == 1.9901
    assert "FlyingThings3D" in v2["data"] and v2["license"].startswith("BSD-3-Clause")
    assert small["weights"][2]["file"] == "raft-small.pth"
    assert rows["gmflow"]["default"] == "gmflow_things-e9887eda.pth"
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "weights='C_T_SKHT_V2' [default]: raft_large_C_T_SKHT_V2-ff5fadd5.pth" in out
    assert "Sintel-Test-Cleanpass epe 1.819" in out and "licence: BSD-3-Clause" in out
    assert main(["models", "--names"]) == 0
    assert capsys.readouterr().out.split() == cvflow.list_models()


def test_unknown_tag():
    with pytest.raises(WeightsError, match="unknown weights tag 'C_T_SKHT_V2' for model 'raft-small'; "
                                           "its tags: C_T_V1, C_T_V2"):
        cvflow.create("raft-small", weights="C_T_SKHT_V2")
    with pytest.raises(FileNotFoundError, match="weights file not found: nothing.pth"):
        cvflow.create("raft-small", weights="nothing.pth")


# --- weights=None end to end: torch hub's cache, or a (local) download --------------------------

def _pair():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (128, 160, 3), dtype=np.uint8)
    return a, np.roll(a, (2, 3), axis=(0, 1))


def test_default_tag_from_torch_hub_cache(tmp_path, monkeypatch):
    _need(SMALL_TV)
    monkeypatch.setenv("CVFLOW_HOME", str(tmp_path / "cvflow"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    file = hub / cw.tag_entry("raft-small", "C_T_V2")["file"]
    file.write_bytes(SMALL_TV.read_bytes())  # stands in for it
    a, b = _pair()
    algo = cvflow.create("raft-small", device="cpu", iters=2)
    assert algo._weights_path == str(file)  # what settings record as the weights' origin
    assert cvflow.create("raft-small", weights="C_T_V2", device="cpu", iters=2)._weights_path == str(file)
    flow = algo.calc(a, b, None)
    ref = cvflow.create("raft-small", weights=str(SMALL_TV), device="cpu", iters=2).calc(a, b, None)
    np.testing.assert_array_equal(flow, ref)
    assert not (tmp_path / "cvflow").exists()


def test_tag_downloaded_from_a_local_server(tmp_path, monkeypatch):
    """The whole path: registry tag -> download (prefix checked) -> torchvision layout -> model."""
    import functools
    import hashlib
    import http.server
    import threading

    _need(SMALL_TV)
    served = tmp_path / "served"
    served.mkdir()
    (served / "small.pth").write_bytes(SMALL_TV.read_bytes())
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(served)))
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    try:
        for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("no_proxy", "127.0.0.1")
        monkeypatch.setenv("CVFLOW_HOME", str(tmp_path / "cvflow"))
        monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
        prefix = hashlib.sha256(SMALL_TV.read_bytes()).hexdigest()[:8]
        entry = dict(cw.tag_entry("raft-small", "C_T_V1"), file=f"raft_small_C_T_V1-{prefix}.pth",
                     sha256_prefix=prefix, url=f"http://127.0.0.1:{httpd.server_address[1]}/small.pth")
        monkeypatch.setattr(cw, "load_registry", lambda: {"schema": 1, "checkpoints": [entry]})
        a, b = _pair()
        flow = cvflow.create("raft-small", weights="C_T_V1", device="cpu", iters=2).calc(a, b, None)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert (tmp_path / "cvflow" / entry["file"]).read_bytes() == SMALL_TV.read_bytes()
    ref = cvflow.create("raft-small", weights=str(SMALL_TV), device="cpu", iters=2).calc(a, b, None)
    np.testing.assert_array_equal(flow, ref)
