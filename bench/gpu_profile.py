"""Dispatch profile of the CUDA backend, on the CPU emulator (no GPU needed).

    python bench/gpu_profile.py                      # every model at the issue's sizes, dry mode
    python bench/gpu_profile.py --only raft --phases # one model, with its phases
    python bench/gpu_profile.py --wet                # kernels and products do their arithmetic
    python bench/gpu_profile.py --precision fp32,tf32,fp16,bf16 --only raft   # a row per mode

Per model, one `calc` (the second call; host uint8 frames in, host flow out): kernel
launches, executor products (cuBLAS), other array ops (each a kernel of its own on CuPy),
all products and their TFLOP, host<->device copies, syncs, allocations, the peak of live
device bytes, and per update (RAFT family) the executor calls and other ops. Then a
latency model for an H200 from those counts (assumptions printed with it):

- GPU time = FLOPs / (the mode's product rate: FP32 SGEMM, or the TF32 / FP16 / BF16
  tensor cores) + bytes moved / (HBM bandwidth), bytes moved taken as twice the bytes
  allocated in the pass (written once, read once: half storage halves them);
- eager: every executor call and other op is a host dispatch of `--dispatch-us`; the host
  and the device overlap, so a pass takes max(host, GPU);
- graph replay: one host call; each node costs `--node-us` on the device (only for a pass
  without array ops outside the executor: nothing else can be captured).

See cvflow/profiling.py for how the counting works.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cvflow.profiling import profile  # noqa: E402

# (model, H, W, options): every registered name at the sizes of the table and of
# bench/gpu_bench.py's latency rows (Sintel-sized: 440x1024 for RAFT's multiples of 8, 448x1024
# for FlowNet's of 64 and GMFlow's / NeuFlow's), and RAFT at 4K
_FLOWNETS = ("flownet2", "flownet2-c", "flownet2-cs", "flownet2-css", "flownet2-s", "flownet2-sd", "flownetc",
             "flownets")
MODELS = [("raft", 440, 1024, {"iters": 32}), ("raft-small", 440, 1024, {"iters": 12}),
          *((name, 448, 1024, {}) for name in _FLOWNETS),
          ("gmflow", 448, 1024, {}), ("gmflow-refine", 448, 1024, {}), ("neuflow2", 448, 1024, {}),
          ("searaft-s", 440, 1024, {"iters": 4}), ("searaft-m", 440, 1024, {"iters": 4}),
          ("searaft-l", 440, 1024, {"iters": 12}), ("raft", 2160, 3840, {"iters": 12})]


# Achieved product rates (TFLOP/s) per mode on an H200, about 60-75% of the dense peaks
# (FP32 67; TF32 tensor cores 494; FP16/BF16 989): assumptions, printed with the table.
MODE_TFLOPS = {"fp32": 50.0, "tf32": 300.0, "fp16": 600.0, "bf16": 600.0}


def model_ms(row, tflops, hbm_tbs, dispatch_us, node_us):
    """(eager ms, graph ms, GPU-only ms) of a profile row under the stated assumptions;
    tflops: the product rate (a number, or {mode: rate} for the row's precision)."""
    if isinstance(tflops, dict):
        tflops = tflops[row.get("precision", "fp32")]
    gpu = row["tflop"] / tflops * 1e3 + 2 * row["alloc_gib"] * 2**30 / (hbm_tbs * 1e12) * 1e3
    calls = row["executor_calls"] + row["other_ops"]
    eager = max(gpu, calls * dispatch_us / 1e3)
    graph = gpu + row["executor_calls"] * node_us / 1e3
    return eager, graph, gpu


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="model names")
    ap.add_argument("--wet", action="store_true", help="kernels and products do their arithmetic (slow)")
    ap.add_argument("--phases", action="store_true", help="print each model's phases")
    ap.add_argument("--precision", default="fp32", help="comma-separated modes: a row per model and mode")
    ap.add_argument("--tflops", type=float, default=None,
                    help="achieved product TFLOP/s for every mode (default per mode: "
                         + ", ".join(f"{k} {v:g}" for k, v in MODE_TFLOPS.items()) + ")")
    ap.add_argument("--hbm", type=float, default=4.0, help="achieved HBM TB/s (H200: 4.8 peak)")
    ap.add_argument("--dispatch-us", type=float, default=8.0, help="host time per eager launch/op (us)")
    ap.add_argument("--node-us", type=float, default=1.5, help="device time per graph node (us)")
    args = ap.parse_args(argv)
    rows = []
    modes = args.precision.split(",")
    rates = MODE_TFLOPS if args.tflops is None else {m: args.tflops for m in MODE_TFLOPS}
    for name, h, w, opts, mode in ((*m, mode) for m in MODELS for mode in modes):
        if args.only and name not in args.only:
            continue
        t = time.perf_counter()
        p = profile(name, h, w, opts, dry=not args.wet, precision=mode)
        row = p.summary()
        row["alloc_gib"] = p.total.alloc_bytes / 2**30
        row["options"] = ",".join(f"{k}={v}" for k, v in opts.items())
        row["s"] = time.perf_counter() - t
        rows.append(row)
        if args.phases:
            print(f"{name} {h}x{w} {row['options']}: phases (entries, executor calls, other ops, peak MiB)")
            for ph, c in p.phases.items():
                print(f"    {ph:<12}{c.entries:6d}{c.executor_calls:8d}{c.other_ops:8d}{c.peak / 2**20:10.0f}")
            if p.update is not None:
                print(f"    one update: {dict(p.update.launches)} products {p.update.ex_matmuls}, "
                      f"other ops {dict(p.update.ops)}")
    head = (f"| model | size | options | mode | launches | executor products | other array ops "
            f"| all products (TFLOP) | H2D copies | syncs | allocations | bytes allocated GiB | peak live MiB "
            f"| per update: calls / other ops | fp32 fallbacks |")
    print(head)
    print("|" + "---|" * 15)
    for r in rows:
        upd = f"{r['update_calls']} / {r['update_ops']}" if "update_calls" in r else "-"
        print(f"| {r['model']} | {r['size']} | {r['options'] or '-'} | {r['precision']} | {r['launches']} "
              f"| {r['ex_matmuls']} | {r['other_ops']} | {r['matmuls']} ({r['tflop']:.2f}) | {r['h2d']} | {r['syncs']} "
              f"| {r['allocs']} | {r['alloc_gib']:.2f} | {r['peak_mib']:.0f} | {upd} | {r['fallbacks']} |")
    print()
    print(f"Modelled H200 latency: products at " + ", ".join(f"{m} {rates[m]:g}" for m in modes)
          + f" TFLOP/s, HBM {args.hbm:g} TB/s on 2x the bytes "
          f"allocated, {args.dispatch_us:g} us host dispatch per eager call, {args.node_us:g} us per graph node")
    print("| model | size | mode | products ms | memory ms | GPU work ms | eager ms (host-bound?) | graph replay ms |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        eager, graph, gpu = model_ms(r, rates, args.hbm, args.dispatch_us, args.node_us)
        flops_ms = r["tflop"] / rates[r["precision"]] * 1e3
        bound = "host" if eager > gpu else "GPU"
        replay = f"{graph:.1f}" if not r["other_ops"] else f"n/a ({r['other_ops']} ops outside the executor)"
        print(f"| {r['model']} | {r['size']} | {r['precision']} | {flops_ms:.1f} | {gpu - flops_ms:.1f} | {gpu:.1f} "
              f"| {eager:.1f} ({bound}) | {replay} |")
    print(f"\n(profiled in {sum(r['s'] for r in rows):.0f} s, {'wet' if args.wet else 'dry'} mode)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
