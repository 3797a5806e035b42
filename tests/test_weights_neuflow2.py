"""NeuFlow v2's weights: the release container through the restricted unpickler, the
tags, and downloads checked by Git blob id (served from 127.0.0.1, never the internet)."""
from __future__ import annotations

import hashlib
import os
import subprocess
import urllib.error
import urllib.request

import numpy as np
import pytest
from conftest import GOLDEN, SHARED, case_weights, golden_cases, need_shared
from test_weights_download import Rogue, closed_port_url, home, rogue, server, tiny_weights  # noqa: F401

import cvflow
import cvflow.download
import cvflow.weights as cw
from cvflow.errors import DownloadError, InputError, WeightsError
from cvflow.io.checkpoint import load_weights

SYNTH = SHARED / "weights" / "neuflow2_synth41.pth"
COMMIT = "204b5e3744461d90303b9ff82caa7a1bb56a2ca2"
BLOBS = {"mixed": "2152e111910de87297af42923d6ed679958b713d", "sintel": "36a2f3a2a7d9896237655c459fc845096100c92e",
         "things": "a1cff3c49d80fc1dde3c655119c0e23898a1b0f6"}


def blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def test_synthetic_release_container_loads_to_the_synthetic_arrays():
    need_shared()
    if not SYNTH.is_file():
        pytest.skip(f"no {SYNTH}")
    flat = load_weights(SYNTH)           # {'model': state_dict}, torch zip, restricted unpickler
    case = golden_cases("neuflow2")[0]
    ref = case_weights("neuflow2", case)
    assert sorted(flat) == sorted(ref) and len(flat) == 155
    ints = [k for k, v in flat.items() if np.asarray(v).dtype == np.int64]
    assert len(ints) == 17 and all(k.endswith("num_batches_tracked") for k in ints)
    for key, value in ref.items():
        np.testing.assert_array_equal(np.asarray(flat[key]), value, err_msg=key)
    # and create() takes the file as it is
    algo = cvflow.create("neuflow2", weights=str(SYNTH), device="cpu")
    assert algo.name == "neuflow2" and algo.getIters_s8() == 8


def test_registry_tags():
    tags = {e["tag"]: e for e in cw.model_tags("neuflow2")}
    assert sorted(tags) == ["mixed", "sintel", "things"] and cw.default_tag("neuflow2") == "mixed"
    for tag, e in tags.items():
        assert e["file"] == f"neuflow_{tag}.pth" and e["git_blob"] == BLOBS[tag]
        assert e["url"] == f"https://raw.githubusercontent.com/neufieldrobotics/NeuFlow_v2/{COMMIT}/neuflow_{tag}.pth"
        assert e["license"].startswith("Apache-2.0")
        assert cw._size_limit(e) >= 36_195_506  # the synthetic file in the same container fits
    described = cw.describe_weights("neuflow2")
    assert described["default"] == "mixed" and [w["tag"] for w in described["weights"]] == ["mixed", "sintel", "things"]


def test_git_blob_id_is_gits(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"hello\n")
    assert cw.git_blob_id(path) == "ce013625030ba8dba906f756967f9e9ca394464a"  # git hash-object
    try:
        out = subprocess.run(["git", "hash-object", str(path)], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return
    assert out.stdout.strip() == cw.git_blob_id(path)


def use_neuflow_like(monkeypatch, url, blob, **kw):
    """The registry replaced by one Git-hosted tagged file of model 'tiny'."""
    entry = {"file": "tiny_mixed.npz", "models": ["tiny"], "tag": "mixed", "default": True, "size": None,
             "size_mb": 0.01, "sha256": None, "git_blob": blob, "license": "Apache-2.0",
             "source": "tiny's repository", "url": url, **kw}
    monkeypatch.setattr(cw, "load_registry", lambda: {"schema": 1, "checkpoints": [entry]})
    return entry


def test_download_right_blob_then_the_cache(home, server, monkeypatch):  # noqa: F811
    served, url = server
    data, _ = tiny_weights(served / "t.npz")
    entry = use_neuflow_like(monkeypatch, f"{url}/t.npz", blob_id(data))
    assert sorted(cw.resolve_weights("tiny")) == ["conv.bias", "conv.weight"]
    assert os.listdir(home) == [entry["file"]] and (home / entry["file"]).read_bytes() == data
    (served / "t.npz").unlink()
    assert sorted(cw.resolve_weights("tiny", "mixed")) == ["conv.bias", "conv.weight"]
    assert cw.cached_file("tiny") == home / entry["file"]


def test_download_by_blob_id_shows_progress(home, server, capsys):  # noqa: F811
    pytest.importorskip("tqdm")
    served, url = server
    data, _ = tiny_weights(served / "t.npz")
    dest = cw.download(f"{url}/t.npz", home / "neuflow_x.pth", git_blob=blob_id(data).upper(), progress=True)
    assert dest.read_bytes() == data and os.listdir(home) == ["neuflow_x.pth"]
    assert "neuflow_x.pth" in capsys.readouterr().err


def test_download_wrong_blob_is_refused_and_nothing_is_kept(home, server, monkeypatch):  # noqa: F811
    served, url = server
    data, _ = tiny_weights(served / "t.npz")
    wrong = "0" * 40
    use_neuflow_like(monkeypatch, f"{url}/t.npz", wrong)
    with pytest.raises(DownloadError, match=f"has git blob id {blob_id(data)}, expected {wrong}; "
                                            "the file was discarded"):
        cw.resolve_weights("tiny")
    assert not home.exists()  # nothing left, not even the folder made for it
    with pytest.raises(InputError, match="git_blob must be 40 hex digits, got 'abc'"):
        cw.download(f"{url}/t.npz", home / "t.npz", git_blob="abc")


def test_download_truncated_is_an_offline_error(home, rogue, monkeypatch):  # noqa: F811
    entry = use_neuflow_like(monkeypatch, f"{rogue}/truncated", "1" * 40)
    with pytest.raises(WeightsError, match="the transfer ended after 400 of 1000 bytes"):
        cw.resolve_weights("tiny")
    assert not home.exists() and entry["file"]  # nothing left, not even the folder


def test_download_stall_times_out(home, rogue, monkeypatch):  # noqa: F811
    monkeypatch.setattr(cvflow.download, "_TIMEOUT_S", 0.2)
    use_neuflow_like(monkeypatch, f"{rogue}/stall", "1" * 40)
    with pytest.raises(WeightsError, match="no data for 0.2 s"):
        cw.resolve_weights("tiny")
    assert not home.exists()  # nothing left, not even the folder made for it


def test_download_over_the_size_limit(home, rogue, monkeypatch):  # noqa: F811
    use_neuflow_like(monkeypatch, f"{rogue}/big", "1" * 40, size=2000)
    with pytest.raises(DownloadError, match="announces 3000 bytes, more than the 2000 allowed"):
        cw.resolve_weights("tiny")
    assert not home.exists()  # nothing left, not even the folder made for it


def test_offline_message_names_url_and_path(home, monkeypatch):  # noqa: F811
    entry = use_neuflow_like(monkeypatch, closed_port_url(), BLOBS["mixed"])
    with pytest.raises(WeightsError, match=r"no weights for model 'tiny' \(weights 'mixed'\): tiny_mixed.npz "
                                           "is not in ") as info:
        cw.resolve_weights("tiny")
    msg = str(info.value)
    for needed in (f"download it from: {entry['url']}", f"put it at: {home / entry['file']}", "refused",
                   "licence: Apache-2.0"):
        assert needed in msg
    assert "torch hub" not in msg


def test_create_neuflow2_offline_names_the_release_url(home, monkeypatch):  # noqa: F811
    """The real registry: weights=None means the `mixed` file, not cached and not reachable."""
    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(WeightsError) as info:
        cvflow.create("neuflow2", device="cpu")
    msg = str(info.value)
    assert f"raw.githubusercontent.com/neufieldrobotics/NeuFlow_v2/{COMMIT}/neuflow_mixed.pth" in msg
    assert str(home / "neuflow_mixed.pth") in msg
    with pytest.raises(WeightsError, match="unknown weights tag 'kitti' for model 'neuflow2'; its tags: "
                                           "mixed, sintel, things"):
        cvflow.create("neuflow2", weights="kitti", device="cpu")
