"""The Python half of bench/gpu_check.sh: CUDA-backend checks and timings on one device.

    python3 bench/gpu_bench.py pack                        # where ../shared exists: fill gpu_pack/
    python3 bench/gpu_bench.py missing                     # what the check needs and gpu_pack/ lacks
    python3 bench/gpu_bench.py parity  [--emulator] [--quick]
    python3 bench/gpu_bench.py graphs  [--emulator]               # CUDA graph replay vs eager
    python3 bench/gpu_bench.py smoke   [--emulator] [--no-pool]   # tiny runs, for compute-sanitizer
    python3 bench/gpu_bench.py latency [--emulator] [--mode fp32|tf32|fp16|bf16] [--repeat N] [--only NAME ...]
    python3 bench/gpu_bench.py memory  [--emulator] [--modes fp32,fp16]

pack: the golden cases, weights and frames the check needs, copied from ../shared into
the ignored folder gpu_pack/ (at most 40 MiB; see bench/gpu_inputs.py): the GPU machine
receives the repository and that folder only. Every other command reads the pack and
fails, naming what is missing, without it.
parity: every packed golden case through `create(..., device="cuda")`, the project's bar
(mean <= 1e-3 px, max <= 5e-2 px).
graphs: each model's pass captured and replayed with new frames against eager passes
(bench/gpu_graphs.py).
latency: RAFT (32 updates), RAFT-small (12 updates), FlowNet2, GMFlow, NeuFlow v2,
SEA-RAFT on the CUDA backend and, in the same run, PyTorch's codes (bench/gpu_torch.py). Like for like,
cvflow's `precision=` against PyTorch at its matching setting: `--mode fp32` against TF32
off (cuDNN and matmul); `tf32` against TF32 allowed in both; `fp16` / `bf16` against
`torch.autocast("cuda", torch.float16 / torch.bfloat16)` (`fast` is the old name of tf32).
Each row: wall ms (host uint8 frames in, host flow out; median) and GPU ms (CUDA events
around a pass on device-resident frames, queued behind a spin kernel so the host is
ahead: the device's own time; "host behind" where the host could not keep up); a mode
other than fp32 also prints its flow's mean / max difference from cvflow's fp32 flow of
the same pair, on the device.
memory: peak GPU memory of RAFT at 3840x2160 (the on-the-fly lookup), per `--modes`.
Lines starting "summary:" feed gpu_check.sh's closing table.

--emulator runs the same code on the CPU emulator of the kernels, at tiny sizes (a smoke
test of this script where there is no GPU). Needs only NumPy (and CuPy on a GPU).
--no-pool (smoke): CuPy's memory pool off, each array its own allocation (for
compute-sanitizer). --no-torch (latency): cvflow only.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
GOLDEN = SHARED / "golden"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import cvflow  # noqa: E402
from gpu_inputs import PACK, case_inputs, frame_pair, golden_cases, missing, pack, random_weights  # noqa: E402
from gpu_timing import cupy_timing, gpu_ms, median_ms  # noqa: E402
from gpu_torch import torch_rows  # noqa: E402

# (model, H, W, options): the latency set; the emulator's smoke sizes are tiny.
LATENCY = [("raft", 440, 1024, {"iters": 32}), ("raft-small", 440, 1024, {"iters": 12}),
           ("flownet2", 448, 1024, {}), ("gmflow", 448, 1024, {}), ("neuflow2", 448, 1024, {}),
           ("searaft-s", 436, 1024, {"iters": 4}), ("searaft-m", 436, 1024, {"iters": 4})]
EMU_SIZE = (64, 96)
TINY = (64, 64)  # compute-sanitizer runs: every kernel once, on the smallest frames the models take
SLOW = ("raft-small_chairs_", "raft-small_sintel_0016_", "neuflow2_synth41_chairs", "neuflow2_synth41_sintel_full",
        "searaft-s_synth31_sintel_full")
MEAN_TOL, MAX_TOL = 1e-3, 5e-2


def device(emulator):
    """Context in which device="cuda" is the GPU, or the emulator with --emulator."""
    if emulator:
        from cvflow.testing import cuda_emulator

        return cuda_emulator()
    return contextlib.nullcontext()


# -- pack and parity ------------------------------------------------------------------------
def do_pack(args):
    cases, left, size = pack()
    print(f"pack: {len(cases)} golden cases, {size / 2**20:.1f} MiB in {PACK}")
    for name, why in left:
        print(f"pack: left out {name} ({why})")
    return 0


def do_missing(args):
    """Exit status 1, naming every missing file, when the pack is incomplete."""
    gone = missing()
    for m in gone:
        print(f"missing: {m}")
    if gone:
        print("summary: pack | MISSING | " + "; ".join(gone[:3]) + (" ..." if len(gone) > 3 else ""))
    return len(gone)


def parity(args):
    """Every packed golden case on the CUDA backend; returns the number of failures (a
    missing pack is a failure, never a skip)."""
    if missing():
        return do_missing(args)
    cases = golden_cases()
    if args.quick or args.emulator:
        cases = [c for c in cases if not c["name"].startswith(SLOW)]
    failed = 0
    print(f"{'case':<40}{'mean |d|':>11}{'max |d|':>11}{'s':>8}  result")
    for case in cases:
        f0, f1, weights, golden = case_inputs(case)
        opts = {"iters": case["iters"]} if "iters" in case else {}
        t = time.perf_counter()
        try:
            with device(args.emulator):
                flow = cvflow.create(case["model"], weights=weights, device="cuda", **opts).calc(f0, f1, None)
            d = np.abs(flow.astype(np.float64) - golden)
            ok = bool(np.isfinite(d).all()) and d.mean() <= MEAN_TOL and d.max() <= MAX_TOL
            mean, worst = d.mean(), d.max()
        except Exception as e:  # a failing case is reported, the others still run
            print(f"{case['name']}: {type(e).__name__}: {e}")
            ok, mean, worst = False, float("nan"), float("nan")
        sec = time.perf_counter() - t
        failed += not ok
        print(f"{case['name']:<40}{mean:11.2e}{worst:11.2e}{sec:8.1f}  {'ok' if ok else 'FAIL'}", flush=True)
    print(f"parity: {len(cases) - failed}/{len(cases)} cases within mean <= {MEAN_TOL} px, max <= {MAX_TOL} px")
    print(f"summary: parity | {'ok' if not failed else 'FAIL'} | {len(cases) - failed}/{len(cases)} golden cases")
    return failed


# -- smoke (for compute-sanitizer) -----------------------------------------------------------
def smoke(args):
    """Each model family once on a tiny pair, RAFT on both correlation paths: every kernel
    launched at least once (a short run that compute-sanitizer can afford)."""
    h, w = TINY
    f0, f1 = frame_pair(h, w)
    runs = [("raft-small", {"iters": 1}), ("raft", {"iters": 1, "corr_budget": 1}), ("flownet2-c", {}),
            ("flownet2-s", {}), ("gmflow-refine", {}), ("neuflow2", {}), ("searaft-s", {"iters": 1})]
    with device(args.emulator):
        for name, opts in runs:
            flow = cvflow.create(name, weights=random_weights(name), device="cuda", **opts).calc(f0, f1, None)
            print(f"smoke {name} {opts}: flow {flow.shape}, finite {bool(np.isfinite(flow).all())}", flush=True)
    return 0


# -- latency -----------------------------------------------------------------------------------
def latency(args):
    """Wall and GPU ms per pair; "x cvflow": a competitor's wall time over cvflow's, each
    at the mode's matching setting (module docstring)."""
    import os

    mode = "tf32" if args.mode == "fast" else args.mode
    if os.environ.get("CUPY_TF32", "0") != "0":
        print("latency with CUPY_TF32 set: CuPy's own products would be TF32 (cvflow's modes are per object)",
              file=sys.stderr)
        return 1
    autocast = None
    if not args.emulator and not args.no_torch:
        try:
            import torch

            # fp32: TF32 off in both places; tf32: on in both; fp16 / bf16: autocast (defaults otherwise)
            torch.backends.cudnn.allow_tf32 = mode != "fp32"
            torch.backends.cuda.matmul.allow_tf32 = mode == "tf32"
            autocast = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mode)
        except ImportError:
            pass
    entries = [e for e in LATENCY if not args.only or e[0] in args.only]
    print(f"{'model':<12}{'input':>11}{'options':>10}{'mode':>6}{'code':>14}{'wall ms':>10}{'GPU ms':>9}"
          f"{'x cvflow':>10}")
    for name, h, w, options in entries:
        if args.emulator:
            h, w = EMU_SIZE
            options = {**options, "iters": 2} if "iters" in options else options
        weights = random_weights(name)
        if name == "raft-small" and (PACK / "weights" / "raft-small.pth").is_file():
            from cvflow.weights import resolve_weights

            weights = {k: np.asarray(v, np.float32) for k, v in
                       resolve_weights(name, str(PACK / "weights" / "raft-small.pth")).items()}
        f0, f1 = frame_pair(h, w)
        opts = ",".join(f"{k}={v}" for k, v in options.items()) or "-"
        lead = f"{name:<12}{f'{h}x{w}':>11}{opts:>10}{mode:>6}"
        with device(args.emulator):
            algo = cvflow.create(name, weights=weights, device="cuda", precision=mode, **options)
            ours = median_ms(lambda: algo.calc(f0, f1, None), args.repeat)
            gpu, behind = float("nan"), False
            if not args.emulator:
                import cupy

                d0, d1 = cupy.asarray(f0), cupy.asarray(f1)
                spin, event = cupy_timing()
                gpu, behind = gpu_ms(lambda: algo.calc(d0, d1, None), spin, event, min(args.repeat, 5))
            vs = ""
            if mode != "fp32":  # this mode's flow against fp32's, same pair, same device
                flow = algo.calc(f0, f1, None)
                algo = None
                ref = cvflow.create(name, weights=weights, device="cuda", precision="fp32", **options).calc(f0, f1, None)
                d = np.abs(flow.astype(np.float64) - ref)
                vs = f"; vs fp32 mean {d.mean():.2e} / max {d.max():.2e} px"
        note = " (host behind)" if behind else ""
        print(f"{lead}{'cvflow':>14}{ours:10.2f}{gpu:9.2f}{1.0:10.2f}{note}{vs}", flush=True)
        summary = [f"cvflow {ours:.1f} / {gpu:.1f}{note}"]
        if not (args.emulator or args.no_torch):
            for label, ms, tgpu, tbehind in torch_rows(name, options, weights, f0, f1, args.repeat, autocast):
                tnote = " (host behind)" if tbehind else ""
                print(f"{lead}{label:>14}{ms:10.2f}{tgpu:9.2f}{ms / ours:10.2f}{tnote}", flush=True)
                summary.append(f"{label} {ms:.1f} / {tgpu:.1f}{tnote} (x{ms / ours:.2f})")
        print(f"summary: latency {mode} {name} {h}x{w} {opts} | wall / GPU ms | " + "; ".join(summary) + vs)
        algo = None  # its GPU memory back before the next model
    return 0


# -- memory ------------------------------------------------------------------------------------
def memory(args):
    """Peak GPU memory of RAFT at 3840x2160 (12 updates; the correlation pyramid would take
    ~89 GB, so the on-the-fly lookup runs), per mode of `--modes`: the pool's in-use
    high-water mark and the bytes it held from the driver."""
    h, w = (128, 160) if args.emulator else (2160, 3840)
    f0, f1 = frame_pair(h, w)
    modes = args.modes.split(",")
    if args.emulator:
        for mode in modes:
            with device(True):
                flow = cvflow.create("raft", weights=random_weights("raft"), device="cuda", iters=2,
                                     corr_budget=1, precision=mode).calc(f0, f1, None)
            print(f"memory {mode} (emulator, {h}x{w}): flow {flow.shape}, finite {bool(np.isfinite(flow).all())}; "
                  "GPU memory is measured on a device only")
        print("summary: memory (emulator) | ran | measured on a device only")
        return 0
    import cupy
    from cupy.cuda.memory_hook import MemoryHook

    class Peak(MemoryHook):
        name = "Peak"

        def __init__(self):
            self.used = self.peak = 0

        def malloc_postprocess(self, **kw):
            self.used += kw["mem_size"]
            self.peak = max(self.peak, self.used)

        def free_postprocess(self, **kw):
            self.used -= kw["mem_size"]

    gib = 1 << 30
    pool = cupy.get_default_memory_pool()
    for mode in modes:
        of = cvflow.create("raft", weights=random_weights("raft"), device="cuda", iters=12, precision=mode)
        of.collectGarbage()
        with Peak() as hook:
            flow = of.calc(f0, f1, None)
        print(f"memory RAFT {h}x{w} iters=12 {mode}: peak in use {hook.peak / gib:.2f} GiB, held by the pool "
              f"{pool.total_bytes() / gib:.2f} GiB (goal <= 2 GiB); flow {flow.shape}, finite "
              f"{bool(np.isfinite(flow).all())}")
        print(f"summary: memory RAFT {h}x{w} {mode} | {'ok' if hook.peak <= gib * 2 else 'over 2 GiB'} | peak in use "
              f"{hook.peak / gib:.2f} GiB")
        of = flow = None
        pool.free_all_blocks()
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["pack", "missing", "parity", "graphs", "smoke", "latency", "memory"])
    ap.add_argument("--mode", choices=["fp32", "tf32", "fp16", "bf16", "fast"], default="fp32",
                    help="latency: cvflow's precision against PyTorch's matching setting (fast: tf32)")
    ap.add_argument("--modes", default="fp32,fp16", help="memory: the precisions measured")
    ap.add_argument("--emulator", action="store_true", help="the CPU emulator at tiny sizes (no GPU needed)")
    ap.add_argument("--quick", action="store_true", help="parity: skip the full-resolution RAFT-small cases")
    ap.add_argument("--repeat", type=int, default=10, help="latency: timed runs per entry (median kept)")
    ap.add_argument("--only", nargs="*", help="latency: model names to run")
    ap.add_argument("--no-torch", action="store_true", help="latency: cvflow only")
    ap.add_argument("--no-pool", action="store_true", help="CuPy's memory pool off (for compute-sanitizer)")
    args = ap.parse_args(argv)
    cvflow.list_models()
    if args.no_pool and not args.emulator:
        import cupy

        cupy.cuda.set_allocator(None)
        cupy.cuda.set_pinned_memory_allocator(None)
    if args.emulator:
        args.repeat = min(args.repeat, 1)
    if args.what not in ("pack", "missing") and missing():
        return do_missing(args)  # without the pack nothing here is checked: fail, never skip
    if args.what == "graphs":
        from gpu_graphs import graphs

        return graphs(args, device)
    return {"pack": do_pack, "missing": do_missing, "parity": parity, "smoke": smoke, "latency": latency,
            "memory": memory}[args.what](args)


if __name__ == "__main__":
    sys.exit(1 if main() else 0)
