"""Throughput of `cvflow.extract`: engine local against Ray with 1 and 2 workers, in one run.

    python bench/extract.py [--clips 24] [--frames 5] [--size 144x256] [--cpus 2] [--threads 1]

Makes --clips small clips (a smooth random texture moving a few px per frame, mp4v),
then runs RAFT-small (12 updates, ../shared/weights/raft-small.pth) over them with
engine local (this process), engine ray (a local Ray instance of --cpus CPUs, 1 CPU
per actor) with 1 and 2 workers, and local again (the load drifts), each into a fresh
output folder. Every model runs --threads threads (default 1, what a 1-CPU Ray actor
gets), so local and ray x1 do the same work on one core and the difference is the
engine's. Prints clips/s per run (wall time of the whole `extract` call, model
creation included), the per-pair latency inside the clips (their `seconds` over their
pairs), each run's time beyond its clips' own work, Ray's cost per clip beyond engine
local's, and a projection for 1 million 5-second clips from the measured latencies.
Timings drift with the machine (and other users of it): compare within one run.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # a local Ray on 127.0.0.1 only


def _threads_from_argv(default="1"):
    # Thread counts must be set before NumPy is imported (here and, inherited, in Ray's workers).
    argv = sys.argv
    return argv[argv.index("--threads") + 1] if "--threads" in argv[:-1] else default


for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "CVFLOW_NUM_THREADS"):
    os.environ[_var] = _threads_from_argv()

import cv2  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cvflow.extraction import extract  # noqa: E402


def make_clips(folder: Path, n: int, frames: int, h: int, w: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        dx, dy = int(rng.integers(-3, 4)), int(rng.integers(-3, 4))
        m = 4 + 3 * frames
        tex = cv2.resize(rng.standard_normal(((h + 2 * m) // 8 + 2, (w + 2 * m) // 8 + 2, 3)).astype(np.float32),
                         None, fx=8, fy=8, interpolation=cv2.INTER_CUBIC)
        tex = ((tex - tex.min()) / (tex.max() - tex.min()) * 255).astype(np.uint8)
        writer = cv2.VideoWriter(str(folder / f"clip{i:03d}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (w, h))
        for k in range(frames):
            writer.write(np.ascontiguousarray(tex[m - k * dy:m - k * dy + h, m - k * dx:m - k * dx + w]))
        writer.release()


def timed_run(clips, out, weights, **kw):
    """(wall s, [(arrival s after the start, row)] in arrival order) of one extract call."""
    arrivals = []
    start = time.perf_counter()
    extract(clips, out, "raft-small", weights=weights, progress=False,
            on_row=lambda row: arrivals.append((time.perf_counter() - start, row)), **kw)
    wall = time.perf_counter() - start
    bad = [r for _, r in arrivals if r["status"] != "ok"]
    if bad:
        raise SystemExit(f"clip failed: {bad[0]['path']}: {bad[0]['error']}")
    return wall, arrivals


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=24)
    ap.add_argument("--frames", type=int, default=5, help="frames per clip (pairs = frames - 1)")
    ap.add_argument("--size", default="144x256", help="HxW of the clips (default 144x256: --max-side 256 of 16:9)")
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance")
    ap.add_argument("--weights", default=str(ROOT.parent / "shared" / "weights" / "raft-small.pth"))
    ap.add_argument("--threads", default="1", help="BLAS and cvflow threads per model, every engine (default 1, "
                    "as a 1-CPU Ray actor has: engine local is then one core)")
    args = ap.parse_args()
    if not Path(args.weights).is_file():
        raise SystemExit(f"RAFT-small checkpoint not found at {args.weights} (../shared beside the project)")
    h, w = (int(v) for v in args.size.split("x"))
    import ray

    with tempfile.TemporaryDirectory() as tmp:
        clips = Path(tmp) / "clips"
        clips.mkdir()
        make_clips(clips, args.clips, args.frames, h, w)
        pairs = args.clips * (args.frames - 1)
        print(f"{args.clips} clips of {args.frames} frames ({pairs} pairs), {w}x{h}, raft-small 12 updates, "
              f"{args.threads} thread(s) per model, {os.cpu_count()} cores visible; load average "
              f"{os.getloadavg()[0]:.1f} at start")
        results = {}
        results["local"] = (1, *timed_run(clips, Path(tmp) / "local", args.weights))
        t = time.perf_counter()
        ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        ray_start = time.perf_counter() - t
        for workers in (1, 2):
            results[f"ray x{workers}"] = (workers, *timed_run(clips, Path(tmp) / f"ray{workers}", args.weights,
                                                              engine="ray", workers=workers))
        ray.shutdown()
        # local once more: the machine's load drifts, and the first and last runs show how much
        results["local again"] = (1, *timed_run(clips, Path(tmp) / "local2", args.weights))

    print(f"\nray.init: {ray_start:.1f} s (once per driver; not in the runs below)\n")
    print(f"{'engine':11} {'wall s':>7} {'clips/s':>8} {'pairs/s':>8} {'s/pair in clip':>15} {'wall - work s':>14}")
    rest = {}
    for name, (workers, wall, arrivals) in results.items():
        rows = [r for _, r in arrivals]
        per_pair = sum(r["seconds"] for r in rows) / sum(r["pairs"] for r in rows)
        rest[name] = wall - sum(r["seconds"] for r in rows) / workers
        print(f"{name:11} {wall:7.1f} {args.clips / wall:8.2f} {pairs / wall:8.2f} {per_pair:15.3f} {rest[name]:14.1f}")

    # "wall - work": the run's time beyond its clips' own compute (the clips' `seconds`, over
    # the workers): model creation, the pool's start, scheduling, transfers, the table. Ray's
    # cost per clip is the difference between ray x1 and local, over the clips: an upper bound,
    # as it includes the actor's start once.
    rows = [r for _, r in results["ray x1"][2]]
    local_rest = min(rest["local"], rest["local again"])
    overhead = max(0.0, (rest["ray x1"] - local_rest) / len(rows))
    print(f"\nRay's cost beyond engine local (1 worker, actor start included): "
          f"{(rest['ray x1'] - local_rest) / len(rows) * 1000:.0f} ms per clip")

    # per-pair latency of one 1-thread model: the runs' range (the shared machine's load drifts)
    latencies = [sum(r["seconds"] for _, r in a) / sum(r["pairs"] for _, r in a) for _, _, a in results.values()]
    fast, slow = min(latencies), max(latencies)
    clip_pairs = 5 * 25 - 1
    print(f"\nProjection, 1 million 5-second clips at 25 fps ({clip_pairs} pairs each), {w}x{h}, RAFT-small on "
          f"1-CPU workers, {fast:.3f}-{slow:.3f} s/pair (this run's range) + {overhead * 1000:.0f} ms/clip; "
          "no GPU measured here:")
    for n in (1, 16, 64, 256, 1024):
        days = [1e6 * (clip_pairs * lat + overhead) / n / 86400 for lat in (fast, slow)]
        print(f"  {n:5d} workers: {days[0]:7.1f} - {days[1]:7.1f} days" + ("  (--every 2: half)" if n == 1 else ""))

if __name__ == "__main__":
    main()
