"""Torch-free checkpoint reading: both torch.save layouts, safety, corruption, .npz.

Fixtures are written here, at test time, in the exact byte layout torch uses (no torch
needed): `TorchPickler` emits the GLOBAL opcodes and persistent ids torch's pickler emits.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cvflow.errors import CvflowFileNotFoundError, CvflowTypeError, UnsafePickleError, WeightsError
from cvflow.io.checkpoint import (load_checkpoint, load_weights, normalize_state_dict,
                                  read_torch_checkpoint, save_converted)

ROOT = Path(__file__).resolve().parents[1]
RAFT_SMALL = ROOT.parent / "shared" / "weights" / "raft-small.pth"

STORAGE_NAMES = {"float32": "FloatStorage", "float64": "DoubleStorage", "float16": "HalfStorage",
                 "int64": "LongStorage", "int32": "IntStorage", "int16": "ShortStorage",
                 "int8": "CharStorage", "uint8": "ByteStorage", "bool": "BoolStorage"}


# --- writing torch's layouts without torch -------------------------------------------

class G:
    """A global to emit as a GLOBAL opcode: `module.name`, never looked up here."""

    def __init__(self, module, name):
        self.module, self.name = module, name

    def __call__(self, *args):  # pickle insists that reduce functions are callable
        raise AssertionError("never called")


class Storage:
    """A torch storage: `data` (1-D) is written as the storage's raw bytes."""

    def __init__(self, key, data, type_name=None, view_of=None):
        self.key, self.data = str(key), np.ascontiguousarray(data).ravel()
        self.type_name = type_name or STORAGE_NAMES[self.data.dtype.name]
        self.view_of = view_of  # legacy storage views: (root Storage, offset, size)


class Tensor:
    def __init__(self, storage, offset, size, stride, rebuild="_rebuild_tensor_v2"):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride
        self.rebuild = rebuild

    def __reduce__(self):
        args = (self.storage, self.offset, tuple(self.size), tuple(self.stride))
        if self.rebuild == "_rebuild_tensor_v2":
            args += (False, OrderedDict())
        return G("torch._utils", self.rebuild), args


class Reduce:
    """An object pickled as `module.name(*args)`."""

    def __init__(self, module, name, *args):
        self.g, self.args = G(module, name), args

    def __reduce__(self):
        return self.g, self.args


class TorchPickler(pickle._Pickler):
    """Protocol-2 pickler writing `G` as GLOBAL and storages as torch persistent ids."""

    dispatch = dict(pickle._Pickler.dispatch)

    def __init__(self, file, legacy):
        super().__init__(file, protocol=2)
        self.legacy, self.storages = legacy, {}

    def _save_g(self, obj):
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        self.memoize(obj)

    dispatch[G] = _save_g

    def persistent_id(self, obj):
        if not isinstance(obj, Storage):
            return None
        view = None
        if obj.view_of is not None:
            root, offset, size = obj.view_of
            view, obj = (obj.key, offset, size), root
        self.storages.setdefault(obj.key, obj)
        pid = ("storage", G("torch", obj.type_name), obj.key, "cpu", obj.data.size)
        return pid + (view,) if self.legacy else pid


def _raw(storage, little):
    return storage.data.astype(storage.data.dtype.newbyteorder("<" if little else ">")).tobytes()


def write_zip(path, obj, little=True, prefix="archive"):
    buf = io.BytesIO()
    pickler = TorchPickler(buf, legacy=False)
    pickler.dump(obj)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{prefix}/data.pkl", buf.getvalue())
        zf.writestr(f"{prefix}/byteorder", "little" if little else "big")
        for key, storage in pickler.storages.items():
            zf.writestr(f"{prefix}/data/{key}", _raw(storage, little))
        zf.writestr(f"{prefix}/version", "3\n")
    return path


def write_legacy(path, obj, little=True, magic=0x1950A86A20F9469CFC6C):
    with open(path, "wb") as f:
        for header in (magic, 1001, {"protocol_version": 1001, "little_endian": little,
                                     "type_sizes": {"short": 2, "int": 4, "long": 4}}):
            pickle.dump(header, f, protocol=2)
        pickler = TorchPickler(f, legacy=True)
        pickler.dump(obj)
        pickle.dump(list(pickler.storages), f, protocol=2)
        for storage in pickler.storages.values():
            f.write(storage.data.size.to_bytes(8, "little" if little else "big"))
            f.write(_raw(storage, little))
    return path


WRITERS = {"zip": write_zip, "legacy": write_legacy}


def tensor(key, arr):
    """A contiguous tensor owning its own storage."""
    arr = np.array(arr, order="C")  # (not ascontiguousarray: it turns 0-d into 1-d)
    strides = [s // arr.itemsize for s in arr.strides]
    return Tensor(Storage(key, arr), 0, arr.shape, strides)


def state_dict(arrays, prefix=""):
    sd = OrderedDict((prefix + k, tensor(i, a)) for i, (k, a) in enumerate(arrays.items()))
    sd._metadata = OrderedDict([("", {"version": 1})])  # as nn.Module.state_dict() does: a BUILD
    return sd


def sample_arrays():
    rng = np.random.default_rng(0)
    return {"conv1.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
            "conv1.bias": rng.standard_normal(4).astype(np.float32),
            "fc.weight": rng.standard_normal((2, 5)),
            "half": rng.standard_normal((3,)).astype(np.float16),
            "bn.num_batches_tracked": np.array(7, dtype=np.int64),
            "mask": np.array([True, False, True]),
            "bytes": np.arange(6, dtype=np.uint8).reshape(2, 3),
            "empty": np.zeros((0, 4), np.float32)}


def assert_same(got, want):
    assert list(got) == list(want)
    for k in want:
        assert got[k].dtype == want[k].dtype, k
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


# --- round trips ------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", WRITERS)
@pytest.mark.parametrize("little", [True, False])
def test_state_dict_round_trip(tmp_path, fmt, little):
    arrays = sample_arrays()
    path = WRITERS[fmt](tmp_path / "ckpt.pth", state_dict(arrays, prefix="module."), little=little)
    got = load_checkpoint(path)
    assert_same(got, arrays)
    assert all(a.flags.c_contiguous and a.flags.writeable for a in got.values())
    assert_same(load_weights(str(path)), arrays)


def test_zip_prefix_is_not_fixed(tmp_path):
    # torch names the archive folder after the file in some versions.
    arrays = {"w": np.ones((2, 2), np.float32)}
    path = write_zip(tmp_path / "m.pth", state_dict(arrays), prefix="raft-things")
    assert_same(load_checkpoint(path), arrays)


@pytest.mark.parametrize("fmt", WRITERS)
def test_views_share_one_storage(tmp_path, fmt):
    base = np.arange(60, dtype=np.float32)
    s = Storage("0", base)
    sd = OrderedDict([
        ("whole", Tensor(s, 0, (6, 10), (10, 1))),
        ("transposed", Tensor(s, 0, (10, 6), (1, 10))),       # non-contiguous
        ("offset_rows", Tensor(s, 20, (2, 10), (10, 1))),      # storage offset
        ("every_other", Tensor(s, 5, (3, 4), (20, 2))),        # offset + gaps
        ("scalar", Tensor(s, 59, (), ())),
    ])
    got = load_checkpoint(WRITERS[fmt](tmp_path / "v.pth", sd))
    m = base.reshape(6, 10)
    np.testing.assert_array_equal(got["whole"], m)
    np.testing.assert_array_equal(got["transposed"], m.T)
    np.testing.assert_array_equal(got["offset_rows"], m[2:4])
    every_other = [[5 + 20 * i + 2 * j for j in range(4)] for i in range(3)]
    np.testing.assert_array_equal(got["every_other"], every_other)
    assert got["scalar"].shape == () and got["scalar"] == 59
    assert all(a.flags.c_contiguous for a in got.values())


def test_legacy_storage_views(tmp_path):
    root = Storage("root", np.arange(10, dtype=np.float32))
    view = Storage("view", np.zeros(0, np.float32), view_of=(root, 4, 5))
    sd = {"a": Tensor(view, 1, (2, 2), (2, 1)), "b": Tensor(root, 0, (10,), (1,))}
    got = load_checkpoint(write_legacy(tmp_path / "v.pth", sd))
    np.testing.assert_array_equal(got["a"], [[5, 6], [7, 8]])
    np.testing.assert_array_equal(got["b"], np.arange(10))


@st.composite
def strided_views(draw):
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=0, max_size=3)))
    dtype = draw(st.sampled_from(["float32", "float64", "float16", "int64", "int32", "uint8", "bool"]))
    offset = draw(st.integers(0, 7))
    base = np.arange(offset + 3 * max(1, int(np.prod(shape))) + 8).astype(dtype)
    arr = base[offset:offset + 2 * int(np.prod(shape)) or None:2][: int(np.prod(shape))].reshape(shape)
    if draw(st.booleans()):
        arr = arr.T
    return base, offset, arr


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(view=strided_views(), fmt=st.sampled_from(sorted(WRITERS)), little=st.booleans())
def test_any_strided_view_loads_as_numpy_sees_it(tmp_path, view, fmt, little):
    base, offset, arr = view
    strides = tuple(s // base.itemsize for s in arr.strides)
    sd = {"t": Tensor(Storage("0", base), offset, arr.shape, strides)}
    got = load_checkpoint(WRITERS[fmt](tmp_path / f"h.{fmt}", sd, little=little))["t"]
    assert got.dtype == arr.dtype and got.shape == arr.shape
    np.testing.assert_array_equal(got, arr)


@pytest.mark.parametrize("fmt", WRITERS)
def test_bfloat16_becomes_float32(tmp_path, fmt):
    want = np.array([1.0, -2.5, 3.140625, 0.0], np.float32)  # exactly representable in bfloat16
    upper = (want.view(np.uint32) >> 16).astype(np.uint16)
    sd = {"t": Tensor(Storage("0", upper, type_name="BFloat16Storage"), 0, (4,), (1,))}
    got = load_checkpoint(WRITERS[fmt](tmp_path / "b.pth", sd))["t"]
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("fmt", WRITERS)
def test_release_containers_are_unwrapped(tmp_path, fmt):
    arrays = {"conv1.0.weight": np.ones((2, 1, 1, 1), np.float32)}
    flownet2 = {"state_dict": state_dict(arrays), "epoch": 3, "best_EPE": np.float64(1.5)}
    path = WRITERS[fmt](tmp_path / "f.pth.tar", flownet2)
    raw = read_torch_checkpoint(path)
    assert raw["epoch"] == 3 and raw["best_EPE"] == 1.5  # numpy scalars come back as numbers
    assert_same(load_checkpoint(path), arrays)
    gmflow = {"model": state_dict(arrays), "optimizer": {"state": {}, "param_groups": [
        {"lr": 1e-4, "betas": (0.9, 0.999), "params": [0], "amsgrad": False}]}, "step": 100}
    assert_same(load_checkpoint(WRITERS[fmt](tmp_path / "g.pth", gmflow)), arrays)


@pytest.mark.parametrize("fmt", WRITERS)
def test_parameters_and_old_rebuilders(tmp_path, fmt):
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    sd = OrderedDict([
        ("param", Reduce("torch._utils", "_rebuild_parameter", tensor("0", a), True, OrderedDict())),
        ("v1", Tensor(Storage("1", a), 0, (2, 3), (3, 1), rebuild="_rebuild_tensor")),
        ("subclass", Reduce("torch._tensor", "_rebuild_from_type_v2", G("torch._utils", "_rebuild_tensor_v2"),
                            G("torch.nn.parameter", "Parameter"),
                            (Storage("2", a), 0, (3, 2), (1, 3), False, OrderedDict()), {})),
        ("shape", Reduce("torch", "Size", (2, 3))),
        ("tags", Reduce("builtins", "set", ["a", "b"])),
        ("bare_storage", Storage("3", a)),
    ])
    path = WRITERS[fmt](tmp_path / "p.pth", sd)
    raw = read_torch_checkpoint(path)
    assert raw["shape"] == (2, 3) and raw["tags"] == {"a", "b"}
    np.testing.assert_array_equal(raw["bare_storage"], a.ravel())
    got = load_checkpoint(path)
    assert sorted(got) == ["bare_storage", "param", "subclass", "v1"]
    np.testing.assert_array_equal(got["param"], a)
    np.testing.assert_array_equal(got["v1"], a)
    np.testing.assert_array_equal(got["subclass"], a.T)


def test_raft_small_release_checkpoint():
    if not RAFT_SMALL.is_file():
        pytest.skip(f"real checkpoint not found at {RAFT_SMALL} (../shared beside the project)")
    w = load_checkpoint(RAFT_SMALL)
    assert len(w) == 106
    assert not any(k.startswith("module.") for k in w)
    assert w["fnet.conv1.weight"].shape == (32, 3, 7, 7)
    assert all(a.dtype == np.float32 and np.isfinite(a).all() for a in w.values())
    assert sum(a.nbytes for a in w.values()) == 3_960_648  # every stored float, nothing invented
    assert 0.01 < float(w["fnet.conv1.weight"].std()) < 1.0  # trained weights, not garbage
    converted = load_weights(RAFT_SMALL)
    assert_same(converted, w)


# --- hostile pickles ---------------------------------------------------------------------

class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _zip_with_pickle(path, payload: bytes):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", payload)
        zf.writestr("archive/version", "3\n")
    return path


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("where", ["zip", "legacy-main", "legacy-header"])
def test_os_system_payload_is_refused_and_not_run(tmp_path, protocol, where):
    marker = tmp_path / "pwned"
    payload = {"state_dict": {"w": Evil(marker)}}
    path = tmp_path / "evil.pth"
    if where == "zip":
        _zip_with_pickle(path, pickle.dumps(payload, protocol=protocol))
    else:
        with open(path, "wb") as f:
            if where == "legacy-header":
                pickle.dump(Evil(marker), f, protocol=protocol)
            else:
                for header in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
                    pickle.dump(header, f, protocol=2)
                pickle.dump(payload, f, protocol=protocol)
                pickle.dump([], f, protocol=2)
    with pytest.raises(UnsafePickleError, match=r"refusing to load global '(posix|os|nt)\.system'"):
        load_weights(path)
    assert not marker.exists()


@pytest.mark.parametrize("module,name", [
    ("builtins", "eval"), ("builtins", "exec"), ("builtins", "getattr"), ("__builtin__", "eval"),
    ("subprocess", "Popen"), ("os", "system"), ("posix", "system"), ("torch.storage", "_load_from_bytes"),
    ("torch._utils", "_rebuild_device_tensor_from_numpy"), ("numpy", "load"), ("collections", "defaultdict"),
    ("torch", "load"), ("torch.FloatStorage", "__init__")])
@pytest.mark.parametrize("fmt", WRITERS)
def test_globals_off_the_allow_list_are_refused(tmp_path, fmt, module, name):
    marker = tmp_path / "pwned"
    sd = {"w": tensor("0", np.ones(2, np.float32)), "x": Reduce(module, name, f"touch {marker}")}
    path = WRITERS[fmt](tmp_path / "evil.pth", sd)
    with pytest.raises(UnsafePickleError, match=re.escape(f"'{module}.{name}'")):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("pid", [("module", "Foo", "source"), "storage",
                                 ("storage", "FloatStorage", "0", "cpu", 4)])
def test_unknown_persistent_ids_are_refused(tmp_path, pid):
    class P(TorchPickler):
        def persistent_id(self, obj):
            return pid if isinstance(obj, Storage) else None

    buf = io.BytesIO()
    P(buf, legacy=False).dump({"w": tensor("0", np.ones(2, np.float32))})
    path = _zip_with_pickle(tmp_path / "p.pth", buf.getvalue())
    with pytest.raises(WeightsError, match="persistent id|malformed storage id"):
        load_checkpoint(path)


def test_build_only_on_state_dicts(tmp_path):
    # BUILD on an allow-listed function would rewrite its attributes for the whole process.
    payload = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n}X\x0c\x00\x00\x00__defaults__K\x01sb."
    path = _zip_with_pickle(tmp_path / "b.pth", payload)
    with pytest.raises(WeightsError, match="BUILD on a function is not allowed"):
        load_checkpoint(path)
    payload = b"\x80\x02ctorch\nFloatStorage\nN}X\x04\x00\x00\x00nameX\x01\x00\x00\x00xs\x86b."
    with pytest.raises(WeightsError, match="BUILD on a _StorageType is not allowed"):
        load_checkpoint(_zip_with_pickle(tmp_path / "s.pth", payload))
    arrays = {"w": np.ones(3, np.float32)}
    assert_same(load_checkpoint(write_zip(tmp_path / "ok.pth", state_dict(arrays))), arrays)


# --- corrupt, truncated, inconsistent ------------------------------------------------------

@pytest.fixture
def small_files(tmp_path):
    arrays = {"a": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.ones(5)}
    return {fmt: WRITERS[fmt](tmp_path / f"s.{fmt}", state_dict(arrays, "module.")).read_bytes()
            for fmt in WRITERS}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fmt=st.sampled_from(sorted(WRITERS)), cut=st.floats(0, 1, exclude_max=True))
def test_truncated_files_raise_weights_error(tmp_path, small_files, fmt, cut):
    data = small_files[fmt]
    path = tmp_path / "cut.pth"
    path.write_bytes(data[: int(cut * len(data))])
    with pytest.raises(WeightsError, match=re.escape(str(path))):
        load_weights(path)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fmt=st.sampled_from(sorted(WRITERS)), where=st.floats(0, 1, exclude_max=True),
       byte=st.integers(0, 255))
def test_corrupt_bytes_load_or_raise_weights_error(tmp_path, small_files, fmt, where, byte):
    data = bytearray(small_files[fmt])
    data[int(where * len(data))] = byte
    path = tmp_path / "bad.pth"
    path.write_bytes(bytes(data))
    try:
        got = load_weights(path)
    except WeightsError as e:  # UnsafePickleError is one too
        assert str(path) in str(e)
    else:
        # a flipped byte may still leave a valid file (other names or values), never junk types
        assert all(isinstance(v, np.ndarray) and v.dtype.kind in "biuf" for v in got.values())


def test_huge_length_field_does_not_allocate(tmp_path):
    # BINUNICODE claiming 4 GiB: must fail on the missing bytes, not try to read them.
    payload = b"\x80\x02X\xff\xff\xff\xffabc."
    path = _zip_with_pickle(tmp_path / "h.pth", payload)
    with pytest.raises(WeightsError, match="corrupt or truncated"):
        load_checkpoint(path)


@pytest.mark.parametrize("fmt", WRITERS)
@pytest.mark.parametrize("offset,size,stride,msg", [
    (0, (5, 4), (4, 1), "does not fit its storage"),          # 20 elements, storage holds 12
    (10, (2, 2), (1, 1), "does not fit its storage"),         # runs past the end
    (0, (10 ** 6,), (0,), "does not fit its storage"),        # stride-0 blow-up of a tiny file
    (-1, (2,), (1,), "malformed tensor"),
    (0, (2, 2), (1,), "malformed tensor"),
])
def test_tensor_views_are_checked_against_storage(tmp_path, fmt, offset, size, stride, msg):
    sd = {"t": Tensor(Storage("0", np.zeros(12, np.float32)), offset, size, stride)}
    with pytest.raises(WeightsError, match=msg):
        load_checkpoint(WRITERS[fmt](tmp_path / "t.pth", sd))


def test_many_overlapping_views_cannot_amplify(tmp_path):
    s = Storage("0", np.zeros(4096, np.float32))
    sd = {f"t{i}": Tensor(s, 1, (4095,), (1,)) for i in range(20)}
    with pytest.raises(WeightsError, match="more data than the file holds"):
        load_checkpoint(write_zip(tmp_path / "amp.pth", sd))


def test_legacy_storage_size_must_match_its_reference(tmp_path):
    path = write_legacy(tmp_path / "l.pth", {"t": tensor("0", np.zeros(4, np.float32))})
    data = bytearray(path.read_bytes())
    count_at = len(data) - 16 - 8
    data[count_at:count_at + 8] = (5).to_bytes(8, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="does not match its reference"):
        load_checkpoint(path)


@pytest.mark.parametrize("fmt", WRITERS)
def test_storage_reread_as_a_wider_type_is_bounded(tmp_path, fmt):
    # The second reference claims the 16 stored bytes hold 4 doubles (32 bytes).
    sd = {"a": tensor("0", np.ones(4, np.float32)), "b": tensor("0", np.ones(4, np.float64))}
    with pytest.raises(WeightsError, match="holds 16 bytes, its tensors need 32"):
        load_checkpoint(WRITERS[fmt](tmp_path / "w.pth", sd))


def test_legacy_bad_magic(tmp_path):
    path = write_legacy(tmp_path / "m.pth", {"t": tensor("0", np.zeros(2, np.float32))}, magic=1234)
    with pytest.raises(WeightsError, match="bad magic number"):
        load_checkpoint(path)


def test_zip_member_checks(tmp_path):
    path = write_zip(tmp_path / "z.pth", {"t": tensor("0", np.zeros(4, np.float32))})
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    missing = tmp_path / "missing.pth"
    with zipfile.ZipFile(missing, "w") as zf:
        for n, b in members.items():
            if n != "archive/data/0":
                zf.writestr(n, b)
    with pytest.raises(WeightsError, match="missing from the archive"):
        load_checkpoint(missing)
    deflated = tmp_path / "deflated.pth"
    with zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as zf:
        for n, b in members.items():
            zf.writestr(n, b)
    with pytest.raises(WeightsError, match="compressed"):
        load_checkpoint(deflated)
    short = tmp_path / "short.pth"
    with zipfile.ZipFile(short, "w") as zf:
        for n, b in members.items():
            zf.writestr(n, b[:8] if n == "archive/data/0" else b)
    with pytest.raises(WeightsError, match="holds 8 bytes, its tensors need 16"):
        load_checkpoint(short)


def test_not_a_checkpoint(tmp_path):
    for content, msg in [(b"", "not a PyTorch checkpoint"), (b"hello world", "not a PyTorch checkpoint"),
                         (b"PK\x03\x04garbage", "corrupt zip archive")]:
        path = tmp_path / "x.pth"
        path.write_bytes(content)
        with pytest.raises(WeightsError, match=msg):
            load_weights(path)
    other_zip = tmp_path / "other.zip"
    with zipfile.ZipFile(other_zip, "w") as zf:
        zf.writestr("readme.txt", "hi")
    with pytest.raises(WeightsError, match="neither a PyTorch checkpoint"):
        load_weights(other_zip)
    with pytest.raises(WeightsError, match="holds no tensors"):
        load_checkpoint(write_zip(tmp_path / "n.pth", {"epoch": 3}))


def test_missing_paths_and_bad_types(tmp_path):
    with pytest.raises(CvflowFileNotFoundError, match="weights file not found"):
        load_weights(tmp_path / "nope.pth")
    with pytest.raises(FileNotFoundError, match="nope"):  # also a builtin FileNotFoundError
        load_checkpoint(tmp_path / "nope.pth")
    with pytest.raises(WeightsError, match="not a regular file"):
        load_weights(tmp_path)
    with pytest.raises(CvflowTypeError, match="str or os.PathLike"):
        load_weights(3)


# --- normalize_state_dict and the converted format ---------------------------------------------

def test_normalize_state_dict():
    w = np.ones(2, np.float32)
    assert list(normalize_state_dict({"module.a": w, "module.b.c": w, "epoch": 1})) == ["a", "b.c"]
    assert list(normalize_state_dict({"model": {"x": w}, "step": 3})) == ["x"]
    assert list(normalize_state_dict({"state_dict": OrderedDict(y=w), "model": "FlowNet2"})) == ["y"]
    with pytest.raises(WeightsError, match="expected a state dict"):
        normalize_state_dict([w])
    with pytest.raises(WeightsError, match="holds no tensors"):
        normalize_state_dict({"epoch": 3})
    with pytest.raises(WeightsError, match="appears both with and without 'module.'"):
        normalize_state_dict({"a": w, "module.a": w})
    with pytest.raises(WeightsError, match="keys must be strings"):
        normalize_state_dict({1: w})


def test_converted_round_trip(tmp_path):
    arrays = sample_arrays()
    dst = tmp_path / "out.npz"
    save_converted({"module." + k: v for k, v in arrays.items()}, dst)
    assert sorted(os.listdir(tmp_path)) == ["out.npz"]  # no temporary left behind
    assert_same(load_weights(dst), arrays)
    # a converted file is what `cvflow convert` writes from a checkpoint
    src = write_legacy(tmp_path / "ck.pth", state_dict(arrays))
    save_converted(load_weights(src), tmp_path / "ck.npz")
    assert_same(load_weights(tmp_path / "ck.npz"), arrays)
    with pytest.raises(WeightsError, match="use load_weights"):
        read_torch_checkpoint(dst)


def test_converted_format_refuses_pickles_and_damage(tmp_path):
    with pytest.raises(WeightsError, match="only numeric arrays"):
        save_converted({"s": np.array(["x"])}, tmp_path / "s.npz")
    assert os.listdir(tmp_path) == []
    obj = tmp_path / "obj.npz"
    np.savez(obj, w=np.array([{"a": 1}], dtype=object))  # needs pickle to load
    with pytest.raises(WeightsError, match="corrupt .npz weights"):
        load_weights(obj)
    good = tmp_path / "good.npz"
    save_converted({"w": np.ones((64, 64), np.float32)}, good)
    data = bytearray(good.read_bytes())
    data[200:300] = b"\x00" * 100
    bad = tmp_path / "bad.npz"
    bad.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match=re.escape(str(bad))):
        load_weights(bad)


def test_raft_small_registry_entry_matches_the_file():
    if not RAFT_SMALL.is_file():
        pytest.skip(f"real checkpoint not found at {RAFT_SMALL}")
    entry = next(e for e in json.loads((ROOT / "weights" / "registry.json").read_text())["checkpoints"]
                 if e["file"] == "raft-small.pth")
    data = RAFT_SMALL.read_bytes()
    assert len(data) == entry["size"]
    assert hashlib.sha256(data).hexdigest() == entry["sha256"]
