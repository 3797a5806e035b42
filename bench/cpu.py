"""CPU throughput of cvflow models against NumPy's own float32 matrix-product rate.

    python bench/cpu.py [--repeat N] [--only NAME ...]

For each entry of BENCHES: seconds per frame pair (best of --repeat), effective GFLOP/s
(the entry's GFLOP per pair / seconds), that rate as a fraction of the sgemm rate
measured in the same run, and that fraction over the PyTorch reference's own fraction
on the same machine kind ("x torch": 1.0 means as efficient as the reference).
Timings drift between machines; compare ratios from one run, never raw seconds. The
2-core CI machine kind has slow spells lasting minutes (same code up to 1.7x slower,
sgemm nearly unchanged): rerun when a ratio looks off.

Weights are random (shapes from the model's `param_shapes`): speed does not depend on
their values. Frames come from ../shared when present (only frames), else noise.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cvflow  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from gpu_inputs import random_weights  # noqa: E402,F401  (one recipe for every bench)

# (model name, H, W, GFLOP per pair, options). GFLOP counts as in ../shared/README.md.
BENCHES = [
    ("raft-small", 440, 1024, 169.1, {"iters": 12}),
    # NeuFlow v2: convolutions, attention, matching and correlation volumes counted here
    # (not in ../shared/README.md): 237.6 GFLOP at 448x1024 with iters_s16=1, iters_s8=8.
    ("neuflow2", 448, 1024, 237.6, {}),
    ("raft", 440, 1024, 736.0, {"iters": 12}),
    ("gmflow", 448, 1024, 406.0, {}),
    ("flownet2-s", 448, 1024, 74.0, {}),
    ("flownet2", 448, 1024, 463.0, {}),  # correlation not counted
]

# The PyTorch reference's effective rate as a fraction of NumPy's sgemm rate, measured on
# the CI machine kind (../shared/README.md: GFLOP / reference seconds / 170 GFLOP/s).
TORCH_FRACTION = {"raft-small": 0.48, "raft": 0.69, "flownet2-s": 0.9, "flownet2": 0.57, "gmflow": 0.39,
                  "neuflow2": 0.90}  # 237.6 GFLOP / 1.55 s (the reference's 1.37-1.74 s) / 170
# NeuFlow v2 over RAFT-small seconds in the reference's own runs (../shared/README.md:
# 1.37-1.74 s and 1.52-2.07 s measured together): compare with the same run's ratio here.
REFERENCE_NEUFLOW_OVER_RAFT_SMALL = (1.37 / 1.52, 1.74 / 2.07)

SINTEL = ROOT.parent / "shared" / "data" / "sintel_market_2"


def sgemm_rate(n=2048, repeat=5):
    """Best-of-`repeat` GFLOP/s of an n x n x n float32 matrix product."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty_like(a)
    np.matmul(a, b, out=out)  # warm-up: thread pool, page faults
    best = min(_timed(lambda: np.matmul(a, b, out=out)) for _ in range(repeat))
    return 2 * n ** 3 / best / 1e9


def _timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def frames(h, w):
    """Two BGR uint8 frames of size (h, w): Sintel when ../shared is there, else noise."""
    import cv2

    paths = [SINTEL / "frame_0016.png", SINTEL / "frame_0017.png"]
    if all(p.is_file() for p in paths):
        return [cv2.resize(cv2.imread(str(p)), (w, h), interpolation=cv2.INTER_AREA) for p in paths]
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return [a, np.roll(a, 2, axis=1)]


def bench(entry, repeat):
    name, h, w, gflop, options = entry
    algo = cvflow.create(name, weights=random_weights(name), device="cpu", **options)
    f0, f1 = frames(h, w)
    algo.calc(f0, f1, None)  # warm-up: caches derived weight matrices
    return min(_timed(lambda: algo.calc(f0, f1, None)) for _ in range(repeat))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per entry (best is kept)")
    ap.add_argument("--only", nargs="*", help="model names to run (default: all entries)")
    args = ap.parse_args(argv)
    cvflow.list_models()
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'model':<14}{'input':>10}{'options':>14}{'s':>9}{'GFLOP/s':>10}{'sgemm':>8}"
          f"{'x sgemm':>9}{'x torch':>9}")
    seconds = {}
    for entry in BENCHES:
        name, h, w, gflop, options = entry
        if args.only and name not in args.only:
            continue
        # sgemm is timed right before and after each entry: a shared machine's load drifts
        before = sgemm_rate(repeat=3)
        sec = seconds[name] = bench(entry, args.repeat)
        rate = max(before, sgemm_rate(repeat=3))
        frac = gflop / sec / rate
        ref = TORCH_FRACTION.get(name)
        vs = f"{frac / ref:9.2f}" if ref else f"{'-':>9}"
        opts = ",".join(f"{k}={v}" for k, v in options.items())
        print(f"{name:<14}{f'{h}x{w}':>10}{opts:>14}{sec:9.2f}{gflop / sec:10.1f}{rate:8.1f}{frac:9.2f}{vs}",
              flush=True)
    if "neuflow2" in seconds and "raft-small" in seconds:
        lo, hi = REFERENCE_NEUFLOW_OVER_RAFT_SMALL
        print(f"neuflow2 / raft-small seconds: {seconds['neuflow2'] / seconds['raft-small']:.2f} "
              f"(the PyTorch references: {lo:.2f}-{hi:.2f})")
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
