"""Weight resolution: registry, cache directory, downloads (local HTTP server), verification."""
from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import shutil
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

import cvflow.download
import cvflow.weights as cw
from cvflow.errors import CvflowTypeError, DownloadError, InputError, WeightsError
from cvflow.io.checkpoint import save_converted

ROOT = Path(__file__).resolve().parents[1]
RAFT_SMALL = ROOT.parent / "shared" / "weights" / "raft-small.pth"
RAFT_SMALL_SHA = "c7d41b9cc88442bb8aa911dbb33086dac55a226394b142937ff22d5578717332"


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty CVFLOW_HOME, and no proxy between us and 127.0.0.1."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    cache = tmp_path / "cvflow-home"
    monkeypatch.setenv("CVFLOW_HOME", str(cache))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # not the user's torch hub cache
    return cache


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving tmp_path/served; yields (folder, base url)."""
    served = tmp_path / "served"
    served.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/raft-small.pth"  # nothing listens there any more


def use_registry(monkeypatch, **entry):
    """Replace the registry by one entry serving model 'tiny' (file tiny.npz unless given)."""
    entry = {"file": "tiny.npz", "models": ["tiny"], "size": None, "sha256": None,
             "license": "MIT", "source": "the tiny model's homepage", "url": None, **entry}
    monkeypatch.setattr(cw, "load_registry", lambda: {"schema": 1, "checkpoints": [entry]})
    return entry


def tiny_weights(path):
    arrays = {"module.conv.weight": np.arange(24, dtype=np.float64).reshape(2, 3, 2, 2),
              "module.conv.bias": np.ones(2, np.float32)}
    save_converted(arrays, path)
    data = Path(path).read_bytes()
    return data, hashlib.sha256(data).hexdigest()


# --- download() --------------------------------------------------------------------------------

def test_download_verifies_and_renames(home, server):
    served, url = server
    data, sha = tiny_weights(served / "tiny.npz")
    dest = home / "sub" / "tiny.npz"
    assert cw.download(f"{url}/tiny.npz", dest, sha256=sha.upper(), size=len(data), progress=False) == dest
    assert dest.read_bytes() == data
    assert os.listdir(dest.parent) == ["tiny.npz"]  # the temporary file is gone


def test_download_wrong_sha256_leaves_nothing(home, server):
    served, url = server
    data, _ = tiny_weights(served / "tiny.npz")
    dest = home / "tiny.npz"
    with pytest.raises(DownloadError, match="has sha256 .* expected 0{64}"):
        cw.download(f"{url}/tiny.npz", dest, sha256="0" * 64, progress=False)
    assert not home.exists()  # nothing left, not even the folder made for it


def test_download_wrong_size_leaves_nothing(home, server):
    served, url = server
    data, _ = tiny_weights(served / "tiny.npz")
    with pytest.raises(DownloadError, match=f"gave {len(data)} bytes, expected {len(data) + 1}"):
        cw.download(f"{url}/tiny.npz", home / "tiny.npz", size=len(data) + 1, progress=False)
    assert not home.exists()  # nothing left, not even the folder made for it


def test_download_failures(home, server):
    _, url = server
    with pytest.raises(DownloadError, match="could not download .*HTTP 404") as info:
        cw.download(f"{url}/absent.pth", home / "absent.pth", progress=False)
    assert info.value.__cause__ is not None  # network failures chain their cause
    assert not home.exists()  # nothing left, not even the folder made for it
    with pytest.raises(DownloadError, match="could not download .*refused"):
        cw.download(closed_port_url(), home / "x.pth", progress=False)
    with pytest.raises(DownloadError, match="only http"):
        cw.download("file:///etc/passwd", home / "x.pth")
    with pytest.raises(InputError, match="sha256 must be 8 to 64 hex digits, got ''"):
        cw.download(f"{url}/absent.pth", home / "x.pth", sha256="")


# --- resolve_weights() --------------------------------------------------------------------------

def test_resolve_downloads_then_uses_the_cache(home, server, monkeypatch):
    served, url = server
    data, sha = tiny_weights(served / "tiny.npz")
    use_registry(monkeypatch, url=f"{url}/tiny.npz", sha256=sha, size=len(data))
    w = cw.resolve_weights("tiny")
    assert (home / "tiny.npz").read_bytes() == data
    assert sorted(w) == ["conv.bias", "conv.weight"]
    assert all(a.dtype == np.float32 for a in w.values())
    np.testing.assert_array_equal(w["conv.weight"], np.arange(24).reshape(2, 3, 2, 2))
    (served / "tiny.npz").unlink()  # the second call must not go to the network
    assert sorted(cw.resolve_weights("tiny")) == ["conv.bias", "conv.weight"]


def test_resolve_downloads_the_real_raft_small(home, server, monkeypatch):
    if not RAFT_SMALL.is_file():
        pytest.skip(f"real checkpoint not found at {RAFT_SMALL} (../shared beside the project)")
    served, url = server
    shutil.copy(RAFT_SMALL, served / "raft-small.pth")
    entry = dict(cw.registry_entry("raft-small"), url=f"{url}/raft-small.pth")
    monkeypatch.setattr(cw, "load_registry", lambda: {"schema": 1, "checkpoints": [entry]})
    w = cw.resolve_weights("raft-small")
    assert (home / "raft-small.pth").read_bytes() == RAFT_SMALL.read_bytes()
    assert len(w) == 106 and w["fnet.conv1.weight"].shape == (32, 3, 7, 7)


def test_resolve_checksum_mismatch_is_a_download_error(home, server, monkeypatch):
    served, url = server
    tiny_weights(served / "tiny.npz")
    use_registry(monkeypatch, url=f"{url}/tiny.npz", sha256="f" * 64)
    with pytest.raises(DownloadError, match="sha256"):
        cw.resolve_weights("tiny")
    assert not home.exists()  # nothing left, not even the folder made for it


def test_resolve_offline_says_what_to_get_and_where(home, monkeypatch):
    use_registry(monkeypatch, file="raft-small.pth", models=["raft-small"], url=closed_port_url(),
                 source="princeton-vl/RAFT models.zip")
    with pytest.raises(WeightsError, match="download failed") as info:
        cw.resolve_weights("raft-small")
    msg = str(info.value)
    for needed in ("raft-small.pth", "princeton-vl/RAFT models.zip", str(home / "raft-small.pth"),
                   "weights="):
        assert needed in msg
    assert isinstance(info.value.__cause__, DownloadError)


def test_resolve_without_url_uses_the_real_registry(home):
    """GMFlow and the FlowNet2 family: the file in the cache, the error says where the authors publish it."""
    with pytest.raises(WeightsError, match="cannot be downloaded automatically") as info:
        cw.resolve_weights("gmflow")
    msg = str(info.value)
    assert "haofeixu/gmflow README" in msg and "Apache-2.0" in msg
    assert str(home / "gmflow_things-e9887eda.pth") in msg and "weights=" in msg
    with pytest.raises(WeightsError, match="gmflow_with_refine_things-36579974.pth"):
        cw.resolve_weights("gmflow-refine")
    with pytest.raises(WeightsError, match="FlowNet2-S_checkpoint.pth.tar is not in") as info:
        cw.resolve_weights("flownet2-s")
    assert "NVIDIA/flownet2-pytorch README" in str(info.value) and "research-only" in str(info.value)


def test_resolve_finds_cached_release_and_converted_files(home, monkeypatch):
    use_registry(monkeypatch, file="tiny.pth")
    home.mkdir()
    tiny_weights(home / "tiny.npz")  # what `cvflow convert tiny.pth tiny.npz` leaves in the cache
    assert sorted(cw.resolve_weights("tiny")) == ["conv.bias", "conv.weight"]
    assert sorted(cw.resolve_weights("anything", checkpoint="tiny.pth")) == ["conv.bias", "conv.weight"]
    with pytest.raises(WeightsError, match="other.pth is not in"):
        cw.resolve_weights("tiny", checkpoint="other.pth")


def test_resolve_mapping_and_path(tmp_path):
    mapping = {"state_dict": {"module.a": np.ones((2, 2)), "module.b": np.zeros(3, np.int64)}, "epoch": 9}
    w = cw.resolve_weights("any", mapping)
    assert sorted(w) == ["a", "b"] and all(v.dtype == np.float32 and v.flags.c_contiguous for v in w.values())
    tiny_weights(tmp_path / "t.npz")
    assert sorted(cw.resolve_weights("any", tmp_path / "t.npz")) == ["conv.bias", "conv.weight"]
    assert sorted(cw.resolve_weights("any", str(tmp_path / "t.npz"))) == ["conv.bias", "conv.weight"]


def test_resolve_errors(home):
    with pytest.raises(CvflowTypeError, match="weights must be None, a tag, a path, or a mapping"):
        cw.resolve_weights("raft", 3.5)
    with pytest.raises(WeightsError, match="no release checkpoint in the registry"):
        cw.resolve_weights("no-such-model")
    with pytest.raises(WeightsError, match="has dtype complex128, expected a real number type"):
        cw.resolve_weights("any", {"w": np.ones(2, complex)})
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        cw.resolve_weights("any", home / "missing.pth")


# --- verify_weights() ---------------------------------------------------------------------------

def test_verify_weights_lists_every_problem_at_once():
    expected = {"a": (2, 3), "b": [4], "c": (1,)}
    good = {"a": np.zeros((2, 3)), "b": np.zeros(4), "c": np.zeros(1)}
    assert cw.verify_weights(good, expected, "m") is good
    bad = {"a": np.zeros((3, 2)), "c": np.zeros(1), "x": np.zeros(1), "y": np.zeros(1)}
    with pytest.raises(WeightsError, match="do not match model 'm'") as info:
        cw.verify_weights(bad, expected, "m")
    msg = str(info.value)
    assert "missing (1): b" in msg and "unexpected (2): x, y" in msg
    assert "a expected (2, 3), got (3, 2)" in msg
    with pytest.raises(WeightsError, match="another model"):
        cw.verify_weights({"z": np.zeros(1)}, expected, "m")


# --- cache and registry -------------------------------------------------------------------------

def test_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("CVFLOW_HOME", str(tmp_path / "h"))
    assert cw.cache_dir() == tmp_path / "h"
    monkeypatch.delenv("CVFLOW_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cw.cache_dir() == tmp_path / ".cache" / "cvflow"


def test_registry_copies_are_identical():
    packaged = ROOT / "cvflow" / "data" / "registry.json"
    assert (ROOT / "weights" / "registry.json").read_bytes() == packaged.read_bytes()


def test_registry_entries():
    reg = cw.load_registry()
    files = [e["file"] for e in reg["checkpoints"]]
    release = [m for e in reg["checkpoints"] if not e.get("tag") for m in e["models"]]
    tags = [(m, e["tag"]) for e in reg["checkpoints"] if e.get("tag") for m in e["models"]]
    assert len(set(files)) == len(files) and len(set(release)) == len(release) and len(set(tags)) == len(tags)
    for e in reg["checkpoints"]:
        assert {"file", "models", "size", "sha256", "license", "source", "url"} <= set(e)
        assert e["sha256"] is None or (len(e["sha256"]) == 64 and int(e["sha256"], 16) >= 0)
        assert e["url"] is None or e["url"].startswith("https://")
        if e.get("tag") and e.get("git_blob"):  # a file in a Git repository: its blob id, bounded in size
            assert len(e["git_blob"]) == 40 and int(e["git_blob"], 16) >= 0 and e["size_mb"] > 0
            assert e["url"].startswith("https://raw.githubusercontent.com/") and e["url"].endswith(e["file"])
        elif e.get("tag"):  # downloadable, checked against the sha256 prefix in the name, bounded in size
            assert e["url"] and e["file"].endswith(f"-{e['sha256_prefix']}.pth") and e["size_mb"] > 0
    fn2 = "FlowNet2{}_checkpoint.pth.tar".format
    expect = {"raft": "raft-things.pth", "raft-small": "raft-small.pth", "flownet2": fn2(""),
              "flownet2-c": fn2("-C"), "flownetc": fn2("-C"), "flownet2-s": fn2("-S"), "flownets": fn2("-S"),
              "flownet2-sd": fn2("-SD"), "flownet2-cs": fn2("-CS"), "flownet2-css": fn2("-CSS"),
              "gmflow": "gmflow_things-e9887eda.pth",
              "gmflow-refine": "gmflow_with_refine_things-36579974.pth"}
    assert {m: cw.registry_entry(m)["file"] for m in expect} == expect
    raft_small = cw.registry_entry("raft-small.pth")
    assert raft_small["size"] == 3_984_814 and raft_small["sha256"] == RAFT_SMALL_SHA
    assert cw.converted_name("FlowNet2-S_checkpoint.pth.tar") == "FlowNet2-S_checkpoint.npz"
    assert json.loads((ROOT / "weights" / "registry.json").read_text()) == reg


# --- tagged weights: torch hub cache, sha256 prefix, bad servers ---------------------------------

def use_tagged(monkeypatch, url=None, data=b"", prefix=None, **entry):
    """Replace the registry by tagged weights 'T1' (the default) of model 'tiny'."""
    prefix = prefix or hashlib.sha256(data).hexdigest()[:8]
    entry = {"file": f"tiny_T1-{prefix}.npz", "models": ["tiny"], "tag": "T1", "default": True,
             "size": None, "size_mb": None, "sha256": None, "sha256_prefix": prefix,
             "license": "MIT", "source": "tiny's own site", "url": url, **entry}
    monkeypatch.setattr(cw, "load_registry", lambda: {"schema": 1, "checkpoints": [entry]})
    return entry


def test_tag_downloads_checks_the_prefix_then_uses_the_cache(home, server, monkeypatch):
    served, url = server
    data, _ = tiny_weights(served / "t.npz")
    entry = use_tagged(monkeypatch, f"{url}/t.npz", data)
    assert sorted(cw.resolve_weights("tiny", "T1")) == ["conv.bias", "conv.weight"]
    assert os.listdir(home) == [entry["file"]] and (home / entry["file"]).read_bytes() == data
    (served / "t.npz").unlink()  # now from the cache, both ways of asking
    assert sorted(cw.resolve_weights("tiny", "t1")) == ["conv.bias", "conv.weight"]
    assert sorted(cw.resolve_weights("tiny")) == ["conv.bias", "conv.weight"]


def test_tag_wrong_hash_is_refused_and_nothing_is_kept(home, server, monkeypatch):
    served, url = server
    data, sha = tiny_weights(served / "t.npz")
    wrong = "0123abcd" if not sha.startswith("0123abcd") else "fedc4321"
    use_tagged(monkeypatch, f"{url}/t.npz", data, prefix=wrong)
    with pytest.raises(DownloadError, match=f"has sha256 {sha}, expected one starting with {wrong}; "
                                            "the file was discarded"):
        cw.resolve_weights("tiny")
    assert not home.exists()  # nothing left, not even the folder made for it


def test_tag_found_in_the_torch_hub_cache_through_torch_home(home, monkeypatch, tmp_path):
    torch_home = tmp_path / "elsewhere" / "torch"
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    entry = use_tagged(monkeypatch, closed_port_url(), prefix="0badc0de")  # a download would fail
    hub = torch_home / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    tiny_weights(hub / entry["file"])
    assert cw.hub_dir() == hub
    assert sorted(cw.resolve_weights("tiny")) == ["conv.bias", "conv.weight"]
    assert not home.exists()  # nothing downloaded or copied


def test_hub_dir_defaults(monkeypatch, tmp_path):
    for var in ("TORCH_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cw.hub_dir() == tmp_path / ".cache" / "torch" / "hub" / "checkpoints"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cw.hub_dir() == tmp_path / "xdg" / "torch" / "hub" / "checkpoints"


def test_tag_offline_names_the_url_and_both_places(home, monkeypatch):
    entry = use_tagged(monkeypatch, closed_port_url(), prefix="0badc0de")
    with pytest.raises(WeightsError, match=r"no weights for model 'tiny' \(weights 'T1'\): tiny_T1-0badc0de.npz "
                                           "is neither in .* nor in torch hub's cache") as info:
        cw.resolve_weights("tiny")
    msg = str(info.value)
    for needed in (f"download it from: {entry['url']}", f"put it at: {home / entry['file']}",
                   f"or at: {cw.hub_dir() / entry['file']}", "refused", "licence: MIT"):
        assert needed in msg
    assert isinstance(info.value.__cause__, DownloadError)


class Rogue(http.server.BaseHTTPRequestHandler):
    """/truncated: announces 1000 bytes, sends 400 and hangs up. /stall: sends 10 bytes, then
    nothing until released. /big: 3000 bytes."""
    release = threading.Event()

    def log_message(self, *args):
        pass

    def do_GET(self):
        announced, sent = {"/truncated": (1000, 400), "/stall": (1000, 10), "/big": (3000, 3000)}[self.path]
        self.send_response(200)
        self.send_header("Content-Length", str(announced))
        self.end_headers()
        self.wfile.write(b"x" * sent)
        self.wfile.flush()
        if self.path == "/stall":
            self.release.wait(10)
        self.close_connection = True


@pytest.fixture
def rogue():
    Rogue.release = threading.Event()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Rogue)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    Rogue.release.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def test_download_truncated_transfer(home, rogue):
    with pytest.raises(DownloadError, match="could not download .*/truncated: the transfer ended after "
                                            "400 of 1000 bytes") as info:
        cw.download(f"{rogue}/truncated", home / "t.pth", progress=False)
    assert info.value.__cause__ is not None and not home.exists()


def test_download_stalled_server_times_out(home, rogue):
    with pytest.raises(DownloadError, match=r"could not download .*/stall: no data for 0.2 s") as info:
        cw.download(f"{rogue}/stall", home / "s.pth", timeout=0.2, progress=False)
    assert isinstance(info.value.__cause__, TimeoutError) and not home.exists()


def test_download_size_limit(home, rogue):
    with pytest.raises(DownloadError, match="announces 3000 bytes, more than the 2000 allowed"):
        cw.download(f"{rogue}/big", home / "b.pth", max_size=2000, progress=False)
    assert not home.exists()  # nothing left, not even the folder made for it


def test_resolve_stalled_download_is_an_offline_error(home, rogue, monkeypatch):
    monkeypatch.setattr(cvflow.download, "_TIMEOUT_S", 0.2)
    entry = use_tagged(monkeypatch, f"{rogue}/stall", prefix="0badc0de", size_mb=0.001)
    with pytest.raises(WeightsError, match="the download failed .*no data for 0.2 s") as info:
        cw.resolve_weights("tiny", "T1")
    assert f"put it at: {home / entry['file']}" in str(info.value)
    assert not home.exists()  # nothing left, not even the folder made for it


def test_size_limit_of_tagged_entries():
    assert cw._size_limit({"size": 1234, "size_mb": 9.0}) == 1234
    assert cw._size_limit({"size": None, "size_mb": 20.129}) == int(20.129 * 1.05 * (1 << 20))
    assert cw._size_limit({"size": None}) is None


def test_download_progress_bar(home, server, capsys):
    pytest.importorskip("tqdm")
    served, url = server
    data, sha = tiny_weights(served / "tiny.npz")
    cw.download(f"{url}/tiny.npz", home / "tiny.npz", sha256=sha[:8], progress=True)
    assert "tiny.npz" in capsys.readouterr().err
