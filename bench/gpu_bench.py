"""The Python half of bench/gpu_check.sh: CUDA-backend checks and timings on one device.

    python3 bench/gpu_bench.py parity  [--emulator] [--quick]
    python3 bench/gpu_bench.py smoke   [--emulator]        # tiny runs, for compute-sanitizer
    python3 bench/gpu_bench.py latency [--emulator] [--repeat N] [--only NAME ...]
    python3 bench/gpu_bench.py memory  [--emulator]

parity: every golden case of ../shared/golden through `create(..., device="cuda")`, the
project's bar (mean <= 1e-3 px, max <= 5e-2 px). latency: RAFT (32 updates), RAFT-small,
FlowNet2, GMFlow on the CUDA backend, and in the same run torchvision's RAFT (same
weights, mapped by ../shared/golden/torchvision/*_key_mapping.tsv) and the authors'
RAFT / GMFlow code where importable ($RAFT_ROOT: a princeton-vl/RAFT checkout, its
`core` package; $GMFLOW_ROOT: a haofeixu/gmflow checkout), each skipped with a message
otherwise. memory: peak GPU memory of RAFT at 3840x2160 (the on-the-fly lookup).

--emulator runs the same code on the CPU emulator of the kernels, at tiny sizes (a smoke
test of this script where there is no GPU). Needs only NumPy (and CuPy on a GPU): see
bench/gpu_inputs.py for frames without OpenCV. --no-pool (smoke): CuPy's memory pool off,
each array its own allocation (for compute-sanitizer). --no-torch (latency): cvflow only.
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
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
from gpu_inputs import case_inputs, frame_pair, golden_cases, random_weights  # noqa: E402

# (model, H, W, options): the latency set; the emulator's smoke sizes are tiny.
LATENCY = [("raft", 440, 1024, {"iters": 32}), ("raft-small", 440, 1024, {"iters": 32}),
           ("flownet2", 448, 1024, {}), ("gmflow", 448, 1024, {}), ("neuflow2", 448, 1024, {})]
EMU_SIZE = (64, 96)
SLOW = ("raft-small_chairs_", "raft-small_sintel_0016_", "neuflow2_synth41_chairs", "neuflow2_synth41_sintel_full")
MEAN_TOL, MAX_TOL = 1e-3, 5e-2


def device(emulator):
    """Context in which device="cuda" is the GPU, or the emulator with --emulator."""
    if emulator:
        from cvflow.testing import cuda_emulator

        return cuda_emulator()
    return contextlib.nullcontext()


# -- parity ----------------------------------------------------------------------------------
def parity(args):
    """Every golden case on the CUDA backend; returns the number of failures."""
    cases = golden_cases()
    if not cases:
        print(f"parity: no golden data at {GOLDEN}: skipped")
        return 0
    if args.quick or args.emulator:
        cases = [(f, c) for f, c in cases if not c["name"].startswith(SLOW)]
    failed = 0
    print(f"{'case':<40}{'mean |d|':>11}{'max |d|':>11}{'s':>8}  result")
    for family, case in cases:
        f0, f1, weights = case_inputs(family, case)
        opts = {"iters": case["iters"]} if "iters" in case else {}
        t = time.perf_counter()
        with device(args.emulator):
            flow = cvflow.create(case["model"], weights=weights, device="cuda", **opts).calc(f0, f1, None)
        sec = time.perf_counter() - t
        d = np.abs(flow.astype(np.float64) - np.load(GOLDEN / family / case["output"]))
        ok = bool(np.isfinite(d).all()) and d.mean() <= MEAN_TOL and d.max() <= MAX_TOL
        failed += not ok
        print(f"{case['name']:<40}{d.mean():11.2e}{d.max():11.2e}{sec:8.1f}  {'ok' if ok else 'FAIL'}", flush=True)
    print(f"parity: {len(cases) - failed}/{len(cases)} cases within mean <= {MEAN_TOL} px, max <= {MAX_TOL} px")
    return failed


# -- smoke (for compute-sanitizer) -----------------------------------------------------------
def smoke(args):
    """Each model family once on a tiny pair, RAFT on both correlation paths: every kernel
    launched at least once (a short run that compute-sanitizer can afford)."""
    h, w = EMU_SIZE
    f0, f1 = frame_pair(h, w)
    runs = [("raft-small", {"iters": 2}), ("raft", {"iters": 2, "corr_budget": 1}), ("flownet2", {}),
            ("gmflow-refine", {}), ("neuflow2", {})]
    with device(args.emulator):
        for name, opts in runs:
            flow = cvflow.create(name, weights=random_weights(name), device="cuda", **opts).calc(f0, f1, None)
            print(f"smoke {name} {opts}: flow {flow.shape}, finite {bool(np.isfinite(flow).all())}", flush=True)
    return 0


# -- latency -----------------------------------------------------------------------------------
def _timed(fn, repeat):
    fn()
    fn()  # warm-up: kernels compiled, pools filled, cuBLAS handles made
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _torch_runners(name, h, w, options, weights, f0, f1):
    """{label: zero-argument callable} for the PyTorch codes importable here; messages for the rest."""
    import os

    try:
        import torch
    except ImportError:
        print(f"  {name}: torch not importable: PyTorch comparisons skipped")
        return {}
    dev = torch.device("cuda")
    rgb = [torch.from_numpy(np.ascontiguousarray(f[..., ::-1])).permute(2, 0, 1)[None].float() for f in (f0, f1)]
    runners = {}
    iters = options.get("iters", 12)
    if name.startswith("raft"):
        try:
            runners["torchvision"] = _torchvision_raft(torch, dev, name, weights, rgb, iters)
        except Exception as e:  # absent, or an API/layout it does not match: say so, go on
            print(f"  {name}: torchvision RAFT skipped ({type(e).__name__}: {e})")
        root = os.environ.get("RAFT_ROOT")
        try:
            if not root:
                raise ImportError("set RAFT_ROOT to a princeton-vl/RAFT checkout")
            sys.path.insert(0, str(Path(root) / "core"))
            from raft import RAFT

            net = RAFT(argparse.Namespace(small=name == "raft-small", mixed_precision=False, alternate_corr=False))
            net.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
            net = net.to(dev).eval()
            a, b = (t.to(dev) for t in rgb)
            runners["authors"] = _torch_call(torch, lambda: net(a, b, iters=iters, test_mode=True)[1])
        except Exception as e:
            print(f"  {name}: authors' RAFT skipped ({type(e).__name__}: {e})")
    if name.startswith("gmflow"):
        root = os.environ.get("GMFLOW_ROOT")
        try:
            if not root:
                raise ImportError("set GMFLOW_ROOT to a haofeixu/gmflow checkout")
            sys.path.insert(0, str(root))
            from gmflow.gmflow import GMFlow

            net = GMFlow(feature_channels=128, num_scales=1, upsample_factor=8, num_head=1, attention_type="swin",
                         ffn_dim_expansion=4, num_transformer_layers=6)
            net.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=False)
            net = net.to(dev).eval()
            a, b = (t.to(dev) for t in rgb)
            runners["authors"] = _torch_call(torch, lambda: net(a, b, attn_splits_list=[2], corr_radius_list=[-1],
                                                                prop_radius_list=[-1])["flow_preds"][-1])
        except Exception as e:
            print(f"  {name}: authors' GMFlow skipped ({type(e).__name__}: {e})")
    if name == "flownet2":
        root = os.environ.get("FLOWNET2_ROOT")
        try:
            if not root:
                raise ImportError("set FLOWNET2_ROOT to a built NVIDIA/flownet2-pytorch checkout")
            sys.path.insert(0, str(root))
            from models import FlowNet2

            net = FlowNet2(argparse.Namespace(rgb_max=255.0, fp16=False), batchNorm=False)
            net.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=False)
            net = net.to(dev).eval()
            pair = torch.stack(rgb, dim=2).to(dev)  # (1, 3, 2, H, W)
            runners["authors"] = _torch_call(torch, lambda: net(pair))
        except Exception as e:
            print(f"  {name}: authors' FlowNet2 skipped ({type(e).__name__}: {e})")
    return runners


def _torch_call(torch, fn):
    def run():
        with torch.inference_mode():
            out = fn()
        out.cpu()  # synchronises, as cvflow's calc returns host arrays
    return run


def _torchvision_raft(torch, dev, name, weights, rgb, iters):
    """torchvision's raft_large / raft_small with cvflow's weights, renamed by the key map."""
    from torchvision.models.optical_flow import raft_large, raft_small

    net = (raft_small if name == "raft-small" else raft_large)(weights=None)
    table = GOLDEN / "torchvision" / f"raft_{'small' if name == 'raft-small' else 'large'}_key_mapping.tsv"
    state = net.state_dict()
    if table.is_file():
        rows = [line.split("\t") for line in table.read_text().splitlines()[1:] if line.strip()]
        for authors, tv, _ in rows:
            key = authors.removeprefix("module.")
            if tv in state and key in weights:
                state[tv] = torch.from_numpy(weights[key]).reshape(state[tv].shape)
        net.load_state_dict(state)
    else:
        print(f"  {name}: no key map at {table}: torchvision runs its own random weights")
    net = net.to(dev).eval()
    a, b = (t.to(dev) / 127.5 - 1 for t in rgb)
    return _torch_call(torch, lambda: net(a, b, num_flow_updates=iters)[-1])


def latency(args):
    """Median seconds per pair, end to end (host uint8 frames in, host flow out). The
    "x cvflow" column: a competitor's time over cvflow's; on the "cvflow bidir" rows,
    calcBidirectional's time over one calc (2.0: two calls)."""
    entries = [e for e in LATENCY if not args.only or e[0] in args.only]
    print(f"{'model':<12}{'input':>11}{'options':>12}{'code':>14}{'ms':>10}{'x cvflow':>10}")
    for name, h, w, options in entries:
        if args.emulator:
            h, w = EMU_SIZE
            options = {**options, "iters": 2} if "iters" in options else options
        weights = random_weights(name)
        if name == "raft-small" and (SHARED / "weights" / "raft-small.pth").is_file():
            from cvflow.weights import resolve_weights

            weights = {k: np.asarray(v, np.float32) for k, v in
                       resolve_weights(name, str(SHARED / "weights" / "raft-small.pth")).items()}
        f0, f1 = frame_pair(h, w)
        with device(args.emulator):
            algo = cvflow.create(name, weights=weights, device="cuda", **options)
            ours = _timed(lambda: algo.calc(f0, f1, None), args.repeat)
        opts = ",".join(f"{k}={v}" for k, v in options.items())
        print(f"{name:<12}{f'{h}x{w}':>11}{opts:>12}{'cvflow':>14}{1e3 * ours:10.2f}{1.0:10.2f}", flush=True)
        if name.startswith("raft"):  # both directions, sharing work: its cost in single calls
            with device(args.emulator):
                both = _timed(lambda: algo.calcBidirectional(f0, f1), args.repeat)
            print(f"{name:<12}{f'{h}x{w}':>11}{opts:>12}{'cvflow bidir':>14}{1e3 * both:10.2f}"
                  f"{both / ours:10.2f}", flush=True)
        if args.emulator or args.no_torch:
            continue
        for label, run in _torch_runners(name, h, w, options, weights, f0, f1).items():
            sec = _timed(run, args.repeat)
            print(f"{name:<12}{f'{h}x{w}':>11}{opts:>12}{label:>14}{1e3 * sec:10.2f}{sec / ours:10.2f}", flush=True)
        algo = None  # its GPU memory back before the next model
    return 0


# -- memory ------------------------------------------------------------------------------------
def memory(args):
    """Peak GPU memory of RAFT at 3840x2160 (12 updates; the correlation pyramid would take
    ~89 GB, so the on-the-fly lookup runs): the pool's in-use high-water mark and the bytes
    it held from the driver."""
    h, w = (128, 160) if args.emulator else (2160, 3840)
    f0, f1 = frame_pair(h, w)
    if args.emulator:
        with device(True):
            flow = cvflow.create("raft", weights=random_weights("raft"), device="cuda", iters=2,
                                 corr_budget=1).calc(f0, f1, None)
        print(f"memory (emulator, {h}x{w}): flow {flow.shape}, finite {bool(np.isfinite(flow).all())}; "
              "GPU memory is measured on a device only")
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

    of = cvflow.create("raft", weights=random_weights("raft"), device="cuda", iters=12)
    pool = cupy.get_default_memory_pool()
    of.collectGarbage()
    with Peak() as hook:
        flow = of.calc(f0, f1, None)
    gib = 1 << 30
    print(f"memory RAFT {h}x{w} iters=12: peak in use {hook.peak / gib:.2f} GiB, held by the pool "
          f"{pool.total_bytes() / gib:.2f} GiB (goal <= 2 GiB); flow {flow.shape}, finite "
          f"{bool(np.isfinite(flow).all())}")
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["parity", "smoke", "latency", "memory"])
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
    return {"parity": parity, "smoke": smoke, "latency": latency, "memory": memory}[args.what](args)


if __name__ == "__main__":
    sys.exit(1 if main() else 0)
