"""What each GPU precision mode costs in accuracy (issue 20), measured on the CUDA emulator.

    python bench/precision_accuracy.py [--modes fp32,tf32] [--chairs 9] [--cases crops|all|NAME,...]
                                       [--no-real] [--no-golden] [--jsonl rows.jsonl]

Every pass runs the CUDA backend on the CPU emulator of the kernels
(`cvflow.testing.cuda_emulator()`), so a mode's numbers are the ones its kernels and
products give, rounding included (TF32: products of operands rounded to 10 mantissa
bits; fp16/bf16: half storage). Rows:

- RAFT-small with the release weights, 12 updates: end-point error against ground truth
  on the real pairs in ../shared (FlyingChairs, the first `--chairs` of its nine pairs;
  Middlebury RubberWhale, unknown flow masked), each mode's EPE relative to fp32's, and
  the mean/max |flow - fp32 flow|.
- Every other golden case (synthetic weights; `crops` by default: the cases the test
  suite runs by default): mean/max |flow - fp32 flow| and mean/max |flow - golden|, the
  authors' fp32 output (the numbers a mode's golden bar is derived from).

The GPU default rule (README "Precision"): the fastest mode whose RAFT-small EPE stays
within 1% (relative) of fp32's on the real pairs and whose mean |flow - fp32 flow| stays
under 0.05 px on every golden case. The script prints the table and which modes pass.
Needs ../shared; exits 2 naming what is missing. Slow (minutes per mode): rows are
appended to `--jsonl` as they are measured.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
GOLDEN = SHARED / "golden"
sys.path.insert(0, str(ROOT))

import cvflow  # noqa: E402
from cvflow.evaluate import find_pairs, load_gt  # noqa: E402
from cvflow.metrics import epe  # noqa: E402
from cvflow.testing import cuda_emulator  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from gpu_inputs import synthetic_weights  # noqa: E402  (one loader of the shared recipe)

FAMILIES = ("raft", "searaft", "flownet2", "gmflow", "neuflow2")
# The golden cases the suite runs by default (the full-frame ones take minutes each here).
SLOW = ("raft-small_chairs_", "raft-small_sintel_0016_", "neuflow2_synth41_chairs", "neuflow2_synth41_sintel_full",
        "searaft-s_synth31_sintel_full")
RULE_EPE_REL, RULE_GOLDEN_MEAN = 0.01, 0.05


def _imread(path, crop=None):
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise SystemExit(f"precision_accuracy: cannot read {path}")
    if crop:
        y0, y1, x0, x1 = crop
        img = img[y0:y1, x0:x1]
    return np.ascontiguousarray(img)


def _weights(family, case):
    w = case["weights"]
    if not w.startswith("synthetic:"):
        return str(SHARED / w)
    return synthetic_weights(GOLDEN / family / f"manifest_{case['model']}.json")


def golden_cases(which):
    """[(family, case)] chosen by `which`: "crops", "all", or comma-separated names."""
    out = []
    for family in FAMILIES:
        index = GOLDEN / family / f"index_{family}.json"
        if index.is_file():
            out += [(family, c) for c in json.loads(index.read_text())]
    if which == "all":
        return out
    if which == "crops":
        return [(f, c) for f, c in out if not c["name"].startswith(SLOW)]
    names = set(which.split(","))
    return [(f, c) for f, c in out if c["name"] in names]


def _options(case):
    opts = {k: case[k] for k in ("iters", "iters_s16", "iters_s8") if k in case}
    return opts


def _diff(a, b):
    d = np.abs(a.astype(np.float64) - b)
    return float(d.mean()), float(d.max())


def _emit(row, sink):
    print(json.dumps(row), flush=True)
    if sink:
        with open(sink, "a") as f:
            f.write(json.dumps(row) + "\n")


def real_rows(modes, n_chairs, middlebury, sink):
    """RAFT-small (release weights, 12 updates) on the real pairs, per mode."""
    weights = SHARED / "weights" / "raft-small.pth"
    pairs = [("chairs", p) for p in find_pairs(SHARED / "data" / "flyingchairs", "chairs")[:n_chairs]]
    if middlebury:
        pairs += [("middlebury", p) for p in find_pairs(SHARED / "data" / "middlebury", "middlebury")]
    ref = {}
    rows = []
    for mode in modes:
        with cuda_emulator():
            of = cvflow.create("raft-small", weights=str(weights), device="cuda", iters=12, precision=mode)
            for dataset, pair in pairs:
                t = time.perf_counter()
                flow = of.calc(_imread(pair.frame0), _imread(pair.frame1), None)
                gt, valid = load_gt(pair)
                key = (dataset, pair.name)
                if mode == modes[0]:
                    ref[key] = flow
                mean, mx = _diff(flow, ref[key])
                row = {"kind": "real", "model": "raft-small", "dataset": dataset, "pair": pair.name, "mode": mode,
                       "epe": float(epe(flow, gt, valid)), "d_ref_mean": mean, "d_ref_max": mx,
                       "seconds": round(time.perf_counter() - t, 1), "load": os.getloadavg()[0]}
                rows.append(row)
                _emit(row, sink)
    return rows


def golden_rows(modes, which, sink):
    rows = []
    for family, case in golden_cases(which):
        f0 = _imread(SHARED / case["frame0"], case.get("crop"))
        f1 = _imread(SHARED / case["frame1"], case.get("crop"))
        weights = _weights(family, case)
        want = np.load(GOLDEN / family / case["output"])
        ref = None
        for mode in modes:
            t = time.perf_counter()
            with cuda_emulator():
                flow = cvflow.create(case["model"], weights=weights, device="cuda", precision=mode,
                                     **_options(case)).calc(f0, f1, None)
            ref = flow if ref is None else ref
            mean, mx = _diff(flow, ref)
            gmean, gmax = _diff(flow, want)
            row = {"kind": "golden", "model": case["model"], "case": case["name"], "mode": mode,
                   "d_ref_mean": mean, "d_ref_max": mx, "d_golden_mean": gmean, "d_golden_max": gmax,
                   "seconds": round(time.perf_counter() - t, 1), "load": os.getloadavg()[0]}
            rows.append(row)
            _emit(row, sink)
    return rows


def table(rows, modes):
    """The README's table (markdown) and the modes that pass the default rule."""
    lines = ["| model (weights) | data | mode | EPE px | EPE vs fp32 | mean / max |d| vs fp32 px | "
             "mean / max |d| vs golden px |", "|---|---|---|---|---|---|---|"]
    real = [r for r in rows if r["kind"] == "real"]
    ok = {m: True for m in modes}
    base_epe = {}
    for dataset in dict.fromkeys(r["dataset"] for r in real):
        for mode in modes:
            rs = [r for r in real if r["dataset"] == dataset and r["mode"] == mode]
            if not rs:
                continue
            e = float(np.mean([r["epe"] for r in rs]))
            base_epe.setdefault(dataset, e)
            rel = e / base_epe[dataset] - 1
            ok[mode] &= abs(rel) <= RULE_EPE_REL
            mean = float(np.mean([r["d_ref_mean"] for r in rs]))
            mx = max(r["d_ref_max"] for r in rs)
            lines.append(f"| raft-small (release) | {dataset} ({len(rs)} pair{'s' if len(rs) > 1 else ''}) | {mode} "
                         f"| {e:.4f} | {rel:+.3%} | {mean:.2e} / {mx:.2e} | - |")
    for r in rows:
        if r["kind"] != "golden":
            continue
        ok[r["mode"]] &= r["d_ref_mean"] < RULE_GOLDEN_MEAN
        weights = "synthetic" if "_synth" in r["case"] else "release"
        lines.append(f"| {r['model']} ({weights}) | {r['case']} | {r['mode']} | - | - | "
                     f"{r['d_ref_mean']:.2e} / {r['d_ref_max']:.2e} | {r['d_golden_mean']:.2e} / "
                     f"{r['d_golden_max']:.2e} |")
    return "\n".join(lines), [m for m in modes if ok[m]]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--modes", default="fp32,tf32", help="comma-separated, fp32 first (the reference)")
    p.add_argument("--chairs", type=int, default=9, help="FlyingChairs pairs (of nine)")
    p.add_argument("--no-middlebury", action="store_true")
    p.add_argument("--cases", default="crops", help="golden cases: crops (default), all, or names")
    p.add_argument("--no-real", action="store_true", help="skip RAFT-small on the real pairs")
    p.add_argument("--no-golden", action="store_true", help="skip the golden cases")
    p.add_argument("--jsonl", help="append each row here as it is measured")
    p.add_argument("--from-jsonl", help="only print the table of rows measured before")
    args = p.parse_args(argv)
    modes = args.modes.split(",")
    if modes[0] != "fp32":
        p.error("--modes must start with fp32 (the reference)")
    if args.from_jsonl:
        rows = [json.loads(line) for line in Path(args.from_jsonl).read_text().splitlines() if line.strip()]
    else:
        if not GOLDEN.is_dir():
            print(f"precision_accuracy: the golden data and real pairs are missing: {SHARED} not found",
                  file=sys.stderr)
            return 2
        print(f"load average {os.getloadavg()}", flush=True)
        rows = []
        if not args.no_real:
            rows += real_rows(modes, args.chairs, not args.no_middlebury, args.jsonl)
        if not args.no_golden:
            rows += golden_rows(modes, args.cases, args.jsonl)
        print(f"load average {os.getloadavg()}")
    text, passing = table(rows, modes)
    print(text)
    print(f"modes within the default rule (EPE within {RULE_EPE_REL:.0%} of fp32, golden mean |d| vs fp32 < "
          f"{RULE_GOLDEN_MEAN} px): {', '.join(passing) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
