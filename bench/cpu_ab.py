"""CPU speed of this checkout against another one (before/after a change), same run, alternating.

    python bench/cpu_ab.py --base PATH [--only NAME ...] [--repeat N] [--threads N] [--size H W]

Each checkout runs in a worker process of its own (both import the name `cvflow`), which
creates every model once with the same synthetic weights (`cvflow.profiling.random_weights`)
and then times one `calc` on the Sintel pair (../shared, resized to --size) each time it is
asked. Calls alternate (base, this, this, base, ...) so that a load change on a shared
machine hits both; each side keeps its best of --repeat. "this / base" below 1.00 means
this checkout is faster. The load average is printed on every row.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SINTEL = ROOT.parent / "shared" / "data" / "sintel_market_2"
DEFAULT = ["raft-small", "raft", "gmflow", "flownet2", "neuflow2", "searaft-s"]

# The worker: reads one JSON request per line, answers one JSON line.
WORKER = r"""
import json, sys, time
import cv2, numpy as np
sys.path.insert(0, sys.argv[1])
import cvflow
from cvflow.profiling import random_weights
cfg = json.loads(sys.argv[2])
h, w = cfg["size"]
frames = [cv2.resize(cv2.imread(p), (w, h), interpolation=cv2.INTER_AREA) for p in cfg["frames"]]
models = {}
for name in cfg["names"]:
    opts = {"iters": 12} if name.startswith("raft") else {}
    models[name] = cvflow.create(name, weights=random_weights(name), threads=cfg["threads"], **opts)
    models[name].calc(frames[0], frames[1], None)  # warm-up: arena, prepared layers
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    name = json.loads(line)["name"]
    t0 = time.perf_counter()
    flow = models[name].calc(frames[0], frames[1], None)
    print(json.dumps({"s": time.perf_counter() - t0, "sum": float(np.abs(flow).sum())}), flush=True)
"""


def _worker(tree: Path, cfg: dict) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", WORKER, str(tree), json.dumps(cfg)], cwd=tree,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    if not json.loads(p.stdout.readline()).get("ready"):
        raise SystemExit(f"worker for {tree} did not start")
    return p


def _ask(p: subprocess.Popen, name: str) -> dict:
    p.stdin.write(json.dumps({"name": name}) + "\n")
    p.stdin.flush()
    return json.loads(p.stdout.readline())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, type=Path, help="the other checkout (e.g. a git worktree)")
    ap.add_argument("--only", nargs="*", default=DEFAULT, help="model names")
    ap.add_argument("--repeat", type=int, default=3, help="timed calls per side and model (best is kept)")
    ap.add_argument("--threads", type=int, default=1, help="threads= of every model (default 1: steadier)")
    ap.add_argument("--size", type=int, nargs=2, default=(218, 512), metavar=("H", "W"))
    args = ap.parse_args(argv)
    if not SINTEL.is_dir():
        print(f"needs {SINTEL} (../shared beside the repository)", file=sys.stderr)
        return 2
    cfg = {"names": args.only, "threads": args.threads, "size": args.size,
           "frames": [str(SINTEL / f"frame_{i:04d}.png") for i in (16, 17)]}
    sides = {"base": _worker(args.base.resolve(), cfg), "this": _worker(ROOT, cfg)}
    print(f"this: {ROOT}\nbase: {args.base.resolve()}\nsize {args.size[0]}x{args.size[1]}, "
          f"threads={args.threads}, best of {args.repeat}")
    print(f"{'model':<12} {'base s':>8} {'this s':>8} {'this/base':>9}  flows equal  load (1/5/15 min)")
    for name in args.only:
        best = {"base": float("inf"), "this": float("inf")}
        sums = {}
        for i in range(args.repeat):
            for side in (("base", "this") if i % 2 == 0 else ("this", "base")):
                r = _ask(sides[side], name)
                best[side], sums[side] = min(best[side], r["s"]), r["sum"]
        load = " ".join(f"{v:.1f}" for v in os.getloadavg())
        print(f"{name:<12} {best['base']:8.3f} {best['this']:8.3f} {best['this'] / best['base']:9.3f}  "
              f"{'yes' if sums['base'] == sums['this'] else 'no':>11}  {load}")
    for p in sides.values():
        p.stdin.close()
        p.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
