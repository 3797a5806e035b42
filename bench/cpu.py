"""CPU speed of cvflow beside PyTorch's, run in the same process, alternating.

    python bench/cpu.py [--repeat N] [--only NAME ...] [--threads N ...] [--profile]

Table 1 (RAFT, RAFT-small): torchvision's raft_large / raft_small on the CPU and cvflow,
with the same weights (../shared/weights/raft_large_tv_random.pth,
raft_small_tv_layout.pth), the same Sintel frames (market_2 16 -> 17, 436x1024, padded
to 440x1024 by both), the same update count (12), each side's threads set the same
(cvflow `threads=N`, torch.set_num_threads(N); default: the cores this process may use,
then 1). Runs alternate (cvflow, torch, torch, cvflow, ...) so a load change on a shared
machine hits both; each side keeps its best of --repeat. "x torch" = torch s / cvflow s
from this run (above 1: cvflow is faster). A round is one run of each side, back to back:
"x pair" is the median over the rounds of the round's torch s / cvflow s, and "pair
range" their lowest and highest. This VM's second core slows for seconds to minutes at
a time (2-thread sgemm at 1.0-2.0x the 1-thread rate, minutes apart, load 0): such a
spell can take every best-of run of one side and none of the other's, while both runs
of a round mostly share it. "sgemm 1/n" is NumPy's sgemm rate at n threads over its
rate at one, taken before and after the row: near 1.0 means the extra cores were not
there for part of the row. The cpu columns are the process's CPU seconds per call (all
threads), which a busy machine inflates less than wall time. The load average is
printed before and after every row: trust only rows taken on a quiet machine.
Note that torchvision's forward upsamples the flow after every update (RAFT: the convex
mask head too), where the authors' test mode and cvflow upsample once at the end.

Table 2 (GMFlow, FlowNet2, NeuFlow v2): no same-run reference yet. Effective GFLOP/s as a fraction
of NumPy's sgemm rate measured in the same run ("x sgemm"), and that fraction over the
PyTorch reference's own fraction measured on another day ("x torch*": a constant).

Torch is never a dependency of cvflow: make the bench its own environment, outside the
repository (on an x86_64 Python 3.11 machine of this project the CUDA build installs
from local disk and runs on the CPU):

    python3 -m venv /work/benchvenv
    /work/benchvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 numpy opencv-python threadpoolctl
    /work/benchvenv/bin/python bench/cpu.py --only raft-small raft      # from the repo root

cvflow is imported from this repository (not installed). Without torch, table 1 is
skipped with the reason. --profile adds torch.profiler's operator table of one torch
call per model.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))

import cvflow  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from gpu_inputs import random_weights  # noqa: E402,F401  (one recipe for every bench)
import torch_raft  # noqa: E402

SINTEL = SHARED / "data" / "sintel_market_2"
ITERS = 12

# Table 2: (model name, H, W, GFLOP per pair, options). GFLOP counts as in ../shared/README.md.
BENCHES = [
    ("raft-small", 440, 1024, 169.1, {"iters": 12}),
    # NeuFlow v2: convolutions, attention, matching and correlation volumes counted here
    # (not in ../shared/README.md): 237.6 GFLOP at 448x1024 with iters_s16=1, iters_s8=8.
    ("neuflow2", 448, 1024, 237.6, {}),
    ("raft", 440, 1024, 736.0, {"iters": 12}),
    ("gmflow", 448, 1024, 406.0, {}),
    ("flownet2-s", 448, 1024, 74.0, {}),
    ("flownet2", 448, 1024, 463.0, {}),  # correlation not counted
    # SEA-RAFT: convolutions, Linear and depthwise layers counted in a run (2 x MACs); the
    # correlation volume and lookups not counted. 436x1024 pads to 440x1024 inside.
    ("searaft-s", 436, 1024, 427.1, {"iters": 4}),
    ("searaft-m", 436, 1024, 775.9, {"iters": 4}),
]
GFLOP = {name: g for name, _, _, g, _ in BENCHES}
# The PyTorch reference's effective rate as a fraction of NumPy's sgemm rate, measured on
# the CI machine kind on another day (../shared/README.md): only where no same-run
# reference exists.
TORCH_FRACTION = {"flownet2-s": 0.9, "flownet2": 0.57, "gmflow": 0.39,
                  "neuflow2": 0.90}  # 237.6 GFLOP / 1.55 s (the reference's 1.37-1.74 s) / 170
# NeuFlow v2 over RAFT-small seconds in the reference's own runs (../shared/README.md:
# 1.37-1.74 s and 1.52-2.07 s measured together): compare with the same run's ratio here
# (table 2 then times RAFT-small too).
REFERENCE_NEUFLOW_OVER_RAFT_SMALL = (1.37 / 1.52, 1.74 / 2.07)
# SEA-RAFT has no reference timing in ../shared: its rows print "-".


def load():
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def sgemm_rate(n=2048, repeat=5, threads=None):
    """Best-of-`repeat` GFLOP/s of an n x n x n float32 matrix product (BLAS at `threads`
    threads, None: as set now)."""
    if threads is not None:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=threads, user_api="blas"):
            return sgemm_rate(n, repeat)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty_like(a)
    np.matmul(a, b, out=out)  # warm-up: thread pool, page faults
    best = min(_timed(lambda: np.matmul(a, b, out=out))[0] for _ in range(repeat))
    return 2 * n ** 3 / best / 1e9


def _timed(fn):
    """(wall s, process CPU s) of fn()."""
    t, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t, time.process_time() - c


def frames(h, w):
    """Two BGR uint8 frames of size (h, w): Sintel when ../shared is there, else noise."""
    import cv2

    paths = [SINTEL / "frame_0016.png", SINTEL / "frame_0017.png"]
    if all(p.is_file() for p in paths):
        imgs = [cv2.imread(str(p)) for p in paths]
        if imgs[0].shape[:2] == (h, w):
            return imgs
        return [cv2.resize(im, (w, h), interpolation=cv2.INTER_AREA) for im in imgs]
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return [a, np.roll(a, 2, axis=1)]


# -- table 1: cvflow beside torchvision ---------------------------------------------------
def core_scaling(threads):
    """sgemm GFLOP/s at `threads` threads over the rate at one (1.0 for one thread)."""
    if threads < 2:
        return 1.0
    return sgemm_rate(1024, 5, threads) / sgemm_rate(1024, 5, 1)


def side_by_side(name, threads, repeat, profile=False):
    """({"cvflow": (wall, cpu), "torch": (wall, cpu)}, [torch s / cvflow s per round]): best
    of `repeat` alternating rounds, and each round's ratio."""
    from threadpoolctl import threadpool_limits

    builder, ckpt = torch_raft.MODELS[name]
    path = SHARED / "weights" / ckpt
    f0, f1 = frames(436, 1024)
    torch_raft.set_threads(threads)
    algo = cvflow.create(name, weights=str(path), device="cpu", iters=ITERS, threads=threads)
    ref = torch_raft.TorchRAFT(name, path, ITERS)
    t0, t1 = ref.prepare(f0, f1)
    sides = {"cvflow": lambda: algo.calc(f0, f1, None), "torch": lambda: ref(t0, t1)}
    # NumPy's BLAS stays at `threads` during torch's turns too (cvflow restores it after
    # each call): its spinning threads then never outnumber torch's.
    with threadpool_limits(limits=threads, user_api="blas"):
        for fn in sides.values():
            fn()  # warm-up: derived weights, thread pools, page faults
        best = {k: (float("inf"), float("inf")) for k in sides}
        rounds = []
        for r in range(repeat):
            walls = {}
            for k in (("cvflow", "torch") if r % 2 == 0 else ("torch", "cvflow")):
                wall, cpu = _timed(sides[k])
                walls[k] = wall
                best[k] = (min(best[k][0], wall), min(best[k][1], cpu))
            rounds.append(walls["torch"] / walls["cvflow"])
        if profile:
            print(torch_raft.profile(sides["torch"]), flush=True)
    return best, rounds


def table_torch(names, thread_settings, repeat, profile):
    why = torch_raft.available()
    if why is not None:
        print(f"table 1 skipped: torch/torchvision do not import here ({why}); see this script's docstring")
        return
    print(f"# table 1: same run, {torch_raft.versions()}, frames 436x1024 (Sintel market_2 16->17), "
          f"{ITERS} updates, best of {repeat}; sgemm {sgemm_rate(repeat=3):.1f} GFLOP/s")
    print(f"{'model':<12}{'threads':>8}{'cvflow s':>10}{'torch s':>9}{'x torch':>9}{'x pair':>8}"
          f"{'pair range':>12}{'cvflow cpu':>12}{'torch cpu':>11}{'x cpu':>7}{'sgemm 1/n':>11}"
          f"   load before / after")
    for name in names:
        if name not in torch_raft.MODELS:
            continue
        for threads in thread_settings:
            before, scale_before = load(), core_scaling(threads)
            best, rounds = side_by_side(name, threads, repeat, profile)
            scale = f"{scale_before:.2f}/{core_scaling(threads):.2f}" if threads > 1 else "-"
            (cw, cc), (tw, tc) = best["cvflow"], best["torch"]
            span = f"{min(rounds):.2f}-{max(rounds):.2f}"
            print(f"{name:<12}{threads:>8}{cw:10.2f}{tw:9.2f}{tw / cw:9.2f}{float(np.median(rounds)):8.2f}"
                  f"{span:>12}{cc:12.2f}{tc:11.2f}{tc / cc:7.2f}{scale:>11}   {before} / {load()}", flush=True)


# -- table 2: against the sgemm rate -------------------------------------------------------
def bench(entry, repeat):
    name, h, w, gflop, options = entry
    algo = cvflow.create(name, weights=random_weights(name), device="cpu", **options)
    f0, f1 = frames(h, w)
    algo.calc(f0, f1, None)  # warm-up: caches derived weight matrices
    return min(_timed(lambda: algo.calc(f0, f1, None))[0] for _ in range(repeat))


def table_sgemm(names, repeat):
    print(f"# table 2: against the sgemm rate of this run, best of {repeat}")
    print(f"{'model':<14}{'input':>10}{'options':>14}{'s':>9}{'GFLOP/s':>10}{'sgemm':>8}"
          f"{'x sgemm':>9}{'x torch*':>9}   load")
    seconds = {}
    if "neuflow2" in names:
        names = [*names, "raft-small"]
    for entry in BENCHES:
        name, h, w, gflop, options = entry
        if name not in names:
            continue
        # sgemm is timed right before and after each entry: a shared machine's load drifts
        before = sgemm_rate(repeat=3)
        sec = seconds[name] = bench(entry, repeat)
        rate = max(before, sgemm_rate(repeat=3))
        frac = gflop / sec / rate
        ref = TORCH_FRACTION.get(name)
        vs = f"{frac / ref:9.2f}" if ref else f"{'-':>9}"
        opts = ",".join(f"{k}={v}" for k, v in options.items())
        print(f"{name:<14}{f'{h}x{w}':>10}{opts:>14}{sec:9.2f}{gflop / sec:10.1f}{rate:8.1f}{frac:9.2f}{vs}"
              f"   {load()}", flush=True)
    if "neuflow2" in seconds and "raft-small" in seconds:
        lo, hi = REFERENCE_NEUFLOW_OVER_RAFT_SMALL
        print(f"neuflow2 / raft-small seconds: {seconds['neuflow2'] / seconds['raft-small']:.2f} "
              f"(the PyTorch references: {lo:.2f}-{hi:.2f})")


def main(argv=None):
    from cvflow.ops.parallel import cores

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per side and entry (best is kept)")
    ap.add_argument("--only", nargs="*", help="model names to run (default: all)")
    ap.add_argument("--threads", type=int, nargs="*", default=None,
                    help=f"thread settings of table 1 (default: {cores()} (the cores this process may use), 1)")
    ap.add_argument("--profile", action="store_true", help="print torch.profiler's table of one torch call")
    args = ap.parse_args(argv)
    names = args.only or [b[0] for b in BENCHES]
    thread_settings = args.threads or sorted({cores(), 1}, reverse=True)
    cvflow.list_models()
    print(f"cores {cores()}, load {load()}")
    if any(n in torch_raft.MODELS for n in names):
        table_torch(names, thread_settings, args.repeat, args.profile)
    rest = [n for n in names if n not in torch_raft.MODELS]
    if rest:
        table_sgemm(rest, args.repeat)


if __name__ == "__main__":
    main()
