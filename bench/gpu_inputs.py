"""Inputs of bench/gpu_bench.py: golden cases, frames and weights, with NumPy only.

A GPU machine receives the repository and nothing beside it, so the check reads its
golden data from the *pack*, an ignored folder inside the repository (``gpu_pack/``, at
most 40 MiB), made where ``../shared`` exists:

    python bench/gpu_bench.py pack

The pack holds each golden case's frames (cropped, uint8), the authors' output, its
weights (a checkpoint file, or the synthetic recipe's manifest with ``synth_weights.py``,
regenerated on the spot: FlowNet2's synthetic weights are 650 MB), torchvision's key
maps, and the Sintel pair of the latency rows. Arrays are stored once per content
(cases share frames) in zlib-compressed .npz files, float32 outputs byte-planed first
(sign/exponent bytes compress well apart from the mantissa's): every case, SEA-RAFT's
and RAFT-small's full-frame ones included, fits the 40 MiB. Without the pack the check
fails, naming what is missing (`missing`). Frames are read with OpenCV when it is
importable, else by the small 8-bit PNG / binary PPM reader here.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
GOLDEN = SHARED / "golden"
PACK = Path(os.environ.get("CVFLOW_GPU_PACK", ROOT / "gpu_pack"))  # the variable: tests only
PACK_LIMIT = 40 << 20
sys.path.insert(0, str(ROOT))

from cvflow.models.base import REGISTRY  # noqa: E402
from cvflow.profiling import random_weights  # noqa: E402,F401  (one recipe for every bench)


def read_image(path) -> np.ndarray:
    """BGR uint8 (H, W, 3) as cv2.imread gives: OpenCV when importable, else 8-bit PNG/PPM."""
    try:
        import cv2
    except ImportError:
        cv2 = None
    if cv2 is not None:
        return cv2.imread(str(path), cv2.IMREAD_COLOR)
    data = Path(path).read_bytes()
    rgb = _read_ppm(data) if data[:2] == b"P6" else _read_png(data)
    return np.ascontiguousarray(rgb[..., ::-1])


def _read_ppm(data):
    fields, pos = [], 2
    while len(fields) < 3:
        while data[pos:pos + 1].isspace():
            pos += 1
        if data[pos:pos + 1] == b"#":
            pos = data.index(b"\n", pos)
            continue
        end = pos
        while not data[end:end + 1].isspace():
            end += 1
        fields.append(int(data[pos:end]))
        pos = end
    w, h, _ = fields
    return np.frombuffer(data, np.uint8, w * h * 3, pos + 1).reshape(h, w, 3)


def _read_png(data):
    """8-bit, non-interlaced gray/RGB/RGBA PNG -> (H, W, 3) RGB (PNG spec filters 0-4)."""
    pos, idat = 8, b""
    while pos < len(data):
        n = int.from_bytes(data[pos:pos + 4], "big")
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, ctype, interlace = (int.from_bytes(body[0:4], "big"), int.from_bytes(body[4:8], "big"),
                                             body[8], body[9], body[12])
            if depth != 8 or interlace or ctype not in (0, 2, 6):
                raise ValueError(f"unsupported PNG (depth {depth}, colour type {ctype}, interlace {interlace})")
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    ch = {0: 1, 2: 3, 6: 4}[ctype]
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + w * ch)
    out = np.zeros((h, w * ch), np.int32)
    prev = np.zeros(w * ch, np.int32)
    for y in range(h):
        f, line = raw[y, 0], raw[y, 1:].astype(np.int32)
        if f == 0:
            cur = line
        elif f == 2:
            cur = (line + prev) & 255
        else:  # sub, average, paeth: left-to-right dependencies, per pixel
            cur = np.zeros_like(line)
            for x in range(w * ch):
                a = cur[x - ch] if x >= ch else 0
                b, c = prev[x], (prev[x - ch] if x >= ch else 0)
                if f == 1:
                    pred = a
                elif f == 3:
                    pred = (a + b) // 2
                else:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                cur[x] = (line[x] + pred) & 255
        out[y] = prev = cur
    img = out.astype(np.uint8).reshape(h, w, ch)
    return np.repeat(img, 3, axis=2) if ch == 1 else img[..., :3]


def _shared_cases():
    """[(family, case)] of every index in ../shared/golden whose model cvflow has."""
    out = []
    for index in sorted(GOLDEN.glob("*/index_*.json")):
        family = index.parent.name
        cases = json.loads(index.read_text())
        if isinstance(cases, list):  # (torchvision's index is a description, not cases)
            out += [(family, c) for c in cases if isinstance(c, dict) and c.get("model") in REGISTRY]
    return out


def save_array(path, a):
    """a into the compressed .npz `path`, its bytes planed (byte k of every element together)."""
    a = np.ascontiguousarray(a)
    planes = a.view(np.uint8).reshape(-1, a.itemsize).T
    np.savez_compressed(path, planes=planes, shape=np.asarray(a.shape, np.int64), dtype=np.asarray(a.dtype.str))


def load_array(path) -> np.ndarray:
    """The array `save_array` wrote."""
    with np.load(path) as z:
        planes, shape, dtype = z["planes"], tuple(int(v) for v in z["shape"]), np.dtype(str(z["dtype"]))
    return np.ascontiguousarray(planes.T).view(dtype).reshape(shape)


def _store(tmp, a):
    """Save a once under frames/ (named by its content); returns its path relative to the pack."""
    a = np.ascontiguousarray(a)
    digest = hashlib.sha256(a.tobytes() + str((a.shape, a.dtype.str)).encode()).hexdigest()[:20]
    rel = f"frames/{digest}.npz"
    if not (tmp / rel).exists():
        save_array(tmp / rel, a)
    return rel


def pack(dest=PACK, limit=PACK_LIMIT):
    """Copy what the GPU check needs from ../shared into `dest` (replaced): returns
    (cases packed, [(case name, why left out)], bytes)."""
    if not GOLDEN.is_dir():
        raise SystemExit(f"pack: no golden data at {GOLDEN}: run it where ../shared exists")
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for sub in ("frames", "golden", "weights", "manifests"):
        (tmp / sub).mkdir(parents=True)
    shutil.copy(SHARED / "tools" / "synth_weights.py", tmp / "synth_weights.py")
    for tsv in (GOLDEN / "torchvision").glob("*_key_mapping.tsv"):
        shutil.copy(tsv, tmp / tsv.name)
    sintel = SHARED / "data" / "sintel_market_2"
    latency = [_store(tmp, read_image(sintel / f"frame_00{i}.png")) for i in (16, 17)]
    size = lambda: sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file())  # noqa: E731
    cases, left = [], []
    for family, case in sorted(_shared_cases(), key=lambda fc: _case_cost(*fc)):
        name, entry = case["name"], {k: case[k] for k in ("name", "model", "iters") if k in case}
        entry["family"] = family
        frames = [read_image(SHARED / case[k]) for k in ("frame0", "frame1")]
        if "crop" in case:
            y0, y1, x0, x1 = case["crop"]
            frames = [f[y0:y1, x0:x1] for f in frames]
        weights = case["weights"]
        files = {}
        if weights.startswith("synthetic:"):
            files[f"manifests/{family}_{case['model']}.json"] = GOLDEN / family / f"manifest_{case['model']}.json"
        else:
            files[f"weights/{Path(weights).name}"] = SHARED / weights
        before, had = size(), {f for f in tmp.rglob("*") if f.is_file()}
        rels = [_store(tmp, f) for f in frames]
        save_array(tmp / f"golden/{name}.npz", np.load(GOLDEN / family / case["output"]))
        for rel, src in files.items():
            shutil.copy(src, tmp / rel)
        if size() > limit:  # this case's new files out again
            grown = size() - before
            for f in {f for f in tmp.rglob("*") if f.is_file()} - had:
                f.unlink()
            left.append((name, f"over the {limit >> 20} MiB limit ({grown >> 10} KiB more)"))
            continue
        entry.update(frames=rels, output=f"golden/{name}.npz", weights=weights if weights.startswith(
            "synthetic:") else f"weights/{Path(weights).name}")
        if weights.startswith("synthetic:"):
            entry["manifest"] = f"manifests/{family}_{case['model']}.json"
        cases.append(entry)
    (tmp / "cases.json").write_text(json.dumps({"latency": latency, "cases": cases}, indent=1))
    total = size()
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return cases, left, total


def _case_cost(family, case):
    """Packing order: cases of small frames and synthetic weights first (so that the limit
    drops the largest ones), RAFT-small's real checkpoint counted once."""
    crop = case.get("crop")
    pixels = (crop[1] - crop[0]) * (crop[3] - crop[2]) if crop else 1 << 20
    return (not case["weights"].startswith(("synthetic:", "weights/raft-small")), pixels)


def _shown(path):
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def _index(pack_dir):
    return json.loads((pack_dir / "cases.json").read_text())


def missing(pack_dir=PACK):
    """What the check needs from the pack and does not find there ([] when complete)."""
    index = pack_dir / "cases.json"
    if not index.is_file():
        return [f"{_shown(index)} (make the pack where ../shared exists: python bench/gpu_bench.py pack)"]
    out, packed = [], _index(pack_dir)
    for case in packed["cases"]:
        need = [*case["frames"], case["output"]]
        need += [case["manifest"], "synth_weights.py"] if "manifest" in case else [case["weights"]]
        out += [f"{_shown(pack_dir / rel)} (case {case['name']})" for rel in need if not (pack_dir / rel).is_file()]
    out += [f"{_shown(pack_dir / rel)} (latency frames)" for rel in packed["latency"] if not (pack_dir / rel).is_file()]
    return out


def golden_cases(pack_dir=PACK):
    """The packed cases (dicts: name, family, model, iters?, frames, output, weights)."""
    return _index(pack_dir)["cases"]


def synthetic_weights(manifest, tools=SHARED / "tools"):
    """The shared recipe's weights for a manifest: `synth_weights.py` imported from `tools`
    (../shared/tools, or a pack that carries a copy of it)."""
    sys.path.insert(0, str(tools))
    try:
        from synth_weights import synth_weights
    finally:
        sys.path.pop(0)
    return synth_weights(json.loads(Path(manifest).read_text()))


def case_inputs(case, pack_dir=PACK):
    """(frame0, frame1, weights, golden flow) of a packed case."""
    f0, f1 = (load_array(pack_dir / rel) for rel in case["frames"])
    weights = case["weights"]
    if weights.startswith("synthetic:"):
        weights = synthetic_weights(pack_dir / case["manifest"], pack_dir)
    else:
        weights = str(pack_dir / weights)
    return f0, f1, weights, load_array(pack_dir / case["output"])


def frame_pair(h, w, pack_dir=PACK):
    """The packed Sintel pair resized to (h, w): OpenCV's area resize when importable, else
    nearest neighbours (the check must not need OpenCV)."""
    frames = [load_array(pack_dir / rel) for rel in _index(pack_dir)["latency"]]
    try:
        import cv2
    except ImportError:
        rows = np.arange(h) * frames[0].shape[0] // h
        cols = np.arange(w) * frames[0].shape[1] // w
        return tuple(np.ascontiguousarray(f[rows][:, cols]) for f in frames)
    return tuple(cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in frames)
