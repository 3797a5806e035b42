"""Inputs of bench/gpu_bench.py: golden cases, frames and weights, with NumPy only.

Frames are read with OpenCV when it is importable, else by the small 8-bit PNG / binary
PPM reader here (a GPU machine may have nothing but NumPy and CuPy).
"""
from __future__ import annotations

import json
import sys
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
GOLDEN = SHARED / "golden"
sys.path.insert(0, str(ROOT))

from cvflow.models.base import REGISTRY  # noqa: E402


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


def golden_cases():
    """[(family, case)] of every index in ../shared/golden (RAFT, FlowNet2, GMFlow, NeuFlow v2)."""
    out = []
    for family in ("raft", "flownet2", "gmflow", "neuflow2"):
        index = GOLDEN / family / f"index_{family}.json"
        if index.is_file():
            out += [(family, c) for c in json.loads(index.read_text())]
    return out


def case_inputs(family, case):
    """(frame0, frame1, weights) of a golden case (as tests/conftest.py loads them)."""
    frames = [read_image(SHARED / case[k]) for k in ("frame0", "frame1")]
    if "crop" in case:
        y0, y1, x0, x1 = case["crop"]
        frames = [np.ascontiguousarray(f[y0:y1, x0:x1]) for f in frames]
    weights = case["weights"]
    if weights.startswith("synthetic:"):
        sys.path.insert(0, str(SHARED / "tools"))
        from synth_weights import synth_weights

        weights = synth_weights(json.loads((GOLDEN / family / f"manifest_{case['model']}.json").read_text()))
    else:
        weights = str(SHARED / weights)
    return frames[0], frames[1], weights


def random_weights(name, seed=0):
    """Fan-in scaled uniform weights of the model's checkpoint shapes (every bench uses these)."""
    model = REGISTRY[name]
    rng = np.random.default_rng(seed)
    out = {}
    for key, shape in model.param_shapes(model.config).items():
        if key.endswith("running_var"):
            out[key] = np.ones(shape, np.float32)
            continue
        fan = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        scale = np.sqrt(3.0 / fan) if len(shape) > 1 else 0.05
        out[key] = np.asarray(scale * (2 * rng.random(shape, dtype=np.float32) - 1), np.float32)
    return out


def frame_pair(h, w):
    """Sintel frames resized to (h, w) when ../shared and OpenCV are there, else shifted noise."""
    path = SHARED / "data" / "sintel_market_2"
    try:
        import cv2

        a, b = (cv2.resize(read_image(path / f"frame_00{i}.png"), (w, h), interpolation=cv2.INTER_AREA)
                for i in (16, 17))
        return a, b
    except Exception:
        rng = np.random.default_rng(1)
        a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        return a, np.roll(a, 3, axis=1)


