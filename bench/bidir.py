"""Cost of both flow directions from one `calcBidirectional` call against one `calc`.

    python bench/bidir.py [--repeat N] [--only NAME ...] [--size H W] [--iters K]

For each model: seconds of `calc(I0, I1)` (one direction) and of
`calcBidirectional(I0, I1)` (both, sharing work), each the best of --repeat runs taken
alternately (A, B, A, B, ...) so that a load change on a shared machine hits both, and
their ratio; 2.0 is what two `calc` calls cost. The same for the CPU time of the process
(all threads). "floor" is the least ratio sharing can reach, 2 - shared / calc, where
shared (timed in the same alternation) is all the work the directions can share: the
feature encoder's pass over both frames and the level-0 all-pairs product (the
backward volume is its transpose). Everything else (context encoder, pyramid, lookups,
updates, upsampling) depends on which frame is first and is done once per direction. RAFT-small uses the release checkpoint
and RAFT the synthetic weights of ../shared (speed does not depend on the values);
frames are Sintel market_2 16 -> 17 resized to the size (noise without ../shared).
Compare ratios from one run, never raw seconds.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import cvflow  # noqa: E402
from cpu import frames, random_weights  # noqa: E402  (bench/cpu.py)

MODELS = ("raft-small", "raft")


def weights(name):
    """The release checkpoint (raft-small) or ../shared's synthetic recipe (raft); random
    weights of the right shapes when ../shared is absent."""
    if name == "raft-small" and (SHARED / "weights" / "raft-small.pth").is_file():
        return str(SHARED / "weights" / "raft-small.pth")
    manifest = SHARED / "golden" / "raft" / f"manifest_{name}.json"
    if manifest.is_file():
        sys.path.insert(0, str(SHARED / "tools"))
        from synth_weights import synth_weights

        return synth_weights(json.loads(manifest.read_text()))
    return random_weights(name)


def _timed(fn):
    """(wall s, CPU s of the whole process): on a shared machine the CPU time ratio is the
    steadier one (waiting for a core does not count), though cache contention still does."""
    t, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t, time.process_time() - c


def shared_work(flow, f0, f1):
    """A callable running what both directions can share: the feature encoder over both
    frames and the level-0 correlation product, in `flow`'s workspace (its own arena)."""
    from cvflow.models import raft

    be, params, config = flow._backend, flow._params, flow._model.config

    def run():
        with be.workspace():
            frames, _ = raft._prepare(be, be.asarray(f0), be.asarray(f1), config["stride"])
            fmaps = raft._encode(be, frames, params["fnet"], config, "instance")
            be.build_corr(fmaps[:1], fmaps[1:], 1)

    return run


def bench(name, h, w, iters, repeat):
    """Best [wall s, CPU s] of calc, calcBidirectional and the shared work, runs alternating."""
    w8 = weights(name)
    # One object per kind of call: each keeps its own arena of large buffers between calls,
    # as in use (an arena drops the buffers a call did not use, so alternating the two
    # kinds on one object pages some in afresh: RAFT's context encoder runs at batch 2 in
    # calcBidirectional; +3% on each call, RAFT 440x1024).
    single = cvflow.create(name, weights=w8, device="cpu", iters=iters)
    double = cvflow.create(name, weights=w8, device="cpu", iters=iters)
    f0, f1 = frames(h, w)
    shared = shared_work(cvflow.create(name, weights=w8, device="cpu", iters=iters), f0, f1)
    calls = (lambda: single.calc(f0, f1), lambda: double.calcBidirectional(f0, f1), shared)
    for fn in calls:  # warm-up: arena buffers, thread pool
        fn()
    times = [[] for _ in calls]
    for _ in range(repeat):
        for fn, t in zip(calls, times):
            t.append(_timed(fn))
    return [[min(x[i] for x in t) for i in (0, 1)] for t in times]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of each (best is kept)")
    ap.add_argument("--only", nargs="*", choices=MODELS, help="models to run (default: all)")
    ap.add_argument("--size", nargs=2, type=int, default=(440, 1024), metavar=("H", "W"))
    ap.add_argument("--iters", type=int, default=12)
    args = ap.parse_args(argv)
    h, w = args.size
    print(f"{'model':<12}{'input':>10}{'iters':>6}{'calc s':>9}{'bidir s':>9}{'ratio':>7}"
          f"{'calc cpu':>10}{'bidir cpu':>10}{'cpu ratio':>10}{'shared s':>10}{'floor':>7}")
    for name in MODELS:
        if args.only and name not in args.only:
            continue
        one, both, shared = bench(name, h, w, args.iters, args.repeat)
        print(f"{name:<12}{f'{h}x{w}':>10}{args.iters:>6}{one[0]:9.2f}{both[0]:9.2f}{both[0] / one[0]:7.2f}"
              f"{one[1]:10.2f}{both[1]:10.2f}{both[1] / one[1]:10.2f}"
              f"{shared[0]:10.2f}{2 - shared[0] / one[0]:7.2f}", flush=True)


if __name__ == "__main__":
    main()
