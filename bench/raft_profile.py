"""Where RAFT's CPU time goes: per backend op and per convolution shape, on one thread.

    python bench/raft_profile.py [--model raft-small|raft] [--size H W] [--iters K]

Runs one `calc` with threads=1 and counts this thread's CPU time (time.thread_time:
on one thread every BLAS call and every cvflow pass runs in the calling thread, so the
figures hold on a busy machine, where wall time does not). For each backend op
(exclusive of the ops it calls) and each convolution shape: calls, CPU seconds, the
share of them spent in matrix products, those products' GFLOP/s, and that rate over
the one-thread sgemm rate measured in the same run ("x sgemm"). The rest of a row's
time is copies and elementwise passes (memory-bound). A profiling aid: it replaces
numpy.matmul and cvflow.ops.parallel.run by timing wrappers for the duration of the run.

The last lines split the call's time by what more threads can speed up: BLAS products
(threaded by BLAS), cvflow's pool (`parallel.run`: pieces of memory-bound passes) and
the rest, which runs in the calling thread at any thread count; from those, the best
time on N cores if the first two scaled perfectly (Amdahl).
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import cvflow  # noqa: E402
from cpu import frames, load, random_weights  # noqa: E402

OPS = ("conv2d", "same_conv", "conv_gru", "sep_conv_gru", "flow_head", "corr_lookup", "build_corr",
       "instance_norm", "batch_norm_", "relu", "relu_", "add_relu_", "tanh", "resize_bilinear",
       "convex_upsample", "concat")


class Recorder:
    def __init__(self):
        self.pooled = [0.0, 0.0]  # thread time inside parallel.run, and of matmuls within it
        self.stack = []   # (name, start thread time, child time)
        self.ops = defaultdict(lambda: [0, 0.0, 0.0, 0.0])    # name -> calls, excl s, matmul s, GFLOP
        self.convs = defaultdict(lambda: [0, 0.0, 0.0, 0.0])  # shape -> same
        self.in_pool = False

    def pool(self, real):
        def run(fn, items, xp=np, blas_one=False):
            if self.in_pool:
                return real(fn, items, xp, blas_one)
            self.in_pool = True
            t0 = time.thread_time()
            try:
                return real(fn, items, xp, blas_one)
            finally:
                self.pooled[0] += time.thread_time() - t0
                self.in_pool = False
        return run

    def wrap(self, name, fn, key_of=None):
        def run(*args, **kwargs):
            key = key_of(*args, **kwargs) if key_of else None
            self.stack.append([name, time.thread_time(), 0.0, key])
            try:
                return fn(*args, **kwargs)
            finally:
                n, t0, child, key = self.stack.pop()
                total = time.thread_time() - t0
                row = self.ops[n]
                row[0] += 1
                row[1] += total - child
                if key is not None:
                    c = self.convs[key]
                    c[0] += 1
                    c[1] += total - child
                if self.stack:
                    self.stack[-1][2] += total
        return run

    def matmul(self, real):
        def mm(a, b, *args, **kwargs):
            t0 = time.thread_time()
            out = real(a, b, *args, **kwargs)
            dt = time.thread_time() - t0
            if self.in_pool:
                self.pooled[1] += dt
            a_, b_ = np.asarray(a), np.asarray(b)
            m, k = a_.shape[-2:] if a_.ndim >= 2 else (1, a_.shape[-1])
            n = b_.shape[-1] if b_.ndim >= 2 else 1
            batch = int(np.prod(np.broadcast_shapes(a_.shape[:-2], b_.shape[:-2]))) if min(a_.ndim, b_.ndim) > 2 else 1
            gflop = 2 * m * k * n * batch / 1e9
            if self.stack:
                frame = self.stack[-1]
                self.ops[frame[0]][2] += dt
                self.ops[frame[0]][3] += gflop
                if frame[3] is not None:
                    self.convs[frame[3]][2] += dt
                    self.convs[frame[3]][3] += gflop
            return out
        return mm


def conv_key(x, p, *args, **kwargs):
    o, c, kh, kw = p["weight"].shape
    stride = kwargs.get("stride", args[0] if args else 1)
    return f"{kh}x{kw} {c:>4}->{o:<4} s{stride} @{x.shape[0]}x{x.shape[1]}x{x.shape[2]}"


def one_thread_sgemm(n=1024, repeat=5):
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    with threadpool_limits(1, user_api="blas"):
        np.matmul(a, b)
        best = min(_t(lambda: np.matmul(a, b)) for _ in range(repeat))
    return 2 * n ** 3 / best / 1e9


def _t(fn):
    t = time.thread_time()
    fn()
    return time.thread_time() - t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="raft-small")
    ap.add_argument("--size", type=int, nargs=2, default=(436, 1024))
    ap.add_argument("--iters", type=int, default=12)
    args = ap.parse_args(argv)
    cvflow.list_models()
    name = args.model
    tv = SHARED / "weights" / {"raft-small": "raft_small_tv_layout.pth", "raft": "raft_large_tv_random.pth"}[name]
    weights = str(tv) if tv.is_file() else random_weights(name)
    algo = cvflow.create(name, weights=weights, device="cpu", iters=args.iters, threads=1)
    f0, f1 = frames(*args.size)
    algo.calc(f0, f1, None)  # warm-up
    rate = one_thread_sgemm()
    rec = Recorder()
    be = algo._backend
    for op in OPS:
        setattr(be, op, rec.wrap(op, getattr(be, op), conv_key if op in ("conv2d", "same_conv") else None))
    from cvflow.ops import parallel

    real, real_run = np.matmul, parallel.run
    np.matmul, parallel.run = rec.matmul(real), rec.pool(real_run)
    try:
        total = _t(lambda: algo.calc(f0, f1, None))
    finally:
        np.matmul, parallel.run = real, real_run
        for op in OPS:
            delattr(be, op)
    print(f"{name} {args.size[0]}x{args.size[1]}, {args.iters} updates, threads=1: {total:.2f} CPU s; "
          f"1-thread sgemm {rate:.1f} GFLOP/s; load {load()}")
    for title, rows in (("op (exclusive)", rec.ops), ("convolution", rec.convs)):
        print(f"\n{title:<36}{'calls':>6}{'s':>8}{'share':>7}{'matmul s':>9}{'GFLOP':>8}{'GFLOP/s':>8}"
              f"{'x sgemm':>8}{'other s':>8}")
        for key, (calls, sec, mm, gf) in sorted(rows.items(), key=lambda kv: -kv[1][1]):
            if sec < 0.005 * total:
                continue
            r = gf / mm if mm else 0.0
            print(f"{key:<36}{calls:>6}{sec:8.3f}{sec / total:7.1%}{mm:9.3f}{gf:8.1f}{r:8.1f}{r / rate:8.2f}"
                  f"{sec - mm:8.3f}")
    blas = sum(row[2] for row in rec.ops.values()) + rec.pooled[1] * 0  # matmuls (in or out of the pool)
    pool = rec.pooled[0] - rec.pooled[1]
    serial = total - blas - pool
    print(f"\nBLAS products {blas:.2f} s ({blas / total:.0%}), cvflow pool {pool:.2f} s ({pool / total:.0%}), "
          f"calling thread only {serial:.2f} s ({serial / total:.0%})")
    for n in (2, 4):
        print(f"best case on {n} cores (Amdahl): {serial + (blas + pool) / n:.2f} s = x{total / (serial + (blas + pool) / n):.2f}")


if __name__ == "__main__":
    main()
