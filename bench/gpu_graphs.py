"""The graphs step of bench/gpu_check.sh: each model's pass captured into a CUDA graph on
the device and replayed with new frames, against eager passes of the same frames.

Per model (random weights, small frames): an eager pass of frames A and of frames B, then
`CudaBackend.graphed` captures the pass on A and replays it on B. Reported: whether the
capture held (a failed capture runs eagerly with a GraphWarning), the graph's nodes, the
largest difference replay - eager, and the mean wall ms of an eager pass and of a replay
(device-resident frames, synchronised). The FlowNet family must capture and match (bit
for bit on the emulator; on a GPU cuBLAS may pick another algorithm inside a capture, so
there within 1e-4 px); the other models are reported (their capture is wired elsewhere).
"""
from __future__ import annotations

import time
import warnings

import numpy as np

import cvflow
from gpu_inputs import frame_pair, random_weights

REQUIRED = ("flownets", "flownetc", "flownet2", "flownet2-c", "flownet2-cs", "flownet2-css", "flownet2-s",
            "flownet2-sd")
OTHERS = ("raft-small", "raft", "gmflow", "neuflow2", "searaft-s")
# The emulator (a smoke test of this step) runs three of the eight at 64x64: the test suite
# replays all eight bit for bit (tests/test_cuda_flownet_pass.py).
EMU_NAMES = ("flownets", "flownet2-c", "flownet2-sd")
SIZE, EMU_SIZE = (128, 256), (64, 64)
TOL = 1e-4


def _wall_ms(fn, be, repeat):
    be.synchronize()
    t = time.perf_counter()
    for _ in range(repeat):
        fn()
    be.synchronize()
    return 1e3 * (time.perf_counter() - t) / repeat


def check(name, h, w, emulator, repeat):
    """(ok, line) for one model: capture on frames A, replay on frames B, compared."""
    from cvflow.backends.cuda.backend import GraphWarning

    options = {"iters": 2} if name.startswith(("raft", "searaft")) else {}
    of = cvflow.create(name, weights=random_weights(name), device="cuda", **options)
    be, model, params = of._backend, of._model, of._params

    def fn(a, b):
        return model.forward(params, a, b, model.config, of.options)

    (a0, a1), (b0, b1) = frame_pair(h, w), frame_pair(h, w)[::-1]  # B: the pair swapped
    a = tuple(be.asarray(f.astype(np.float32)) for f in (a0, a1))
    b = tuple(be.asarray(f.astype(np.float32)) for f in (b0, b1))
    fn(*a)  # warm: constants of the shape, prepared layers, compiled kernels
    eager = be.to_host(fn(*b))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", GraphWarning)
        be.graphed(("check", h, w), fn, *a)
        replay = be.to_host(be.graphed(("check", h, w), fn, *b))
    entry = be.__dict__.get("_graphs", {}).get(("check", h, w))
    if entry is None:
        why = caught[0].message if caught else "no graph"
        return name not in REQUIRED, f"{name:<14} eager only ({str(why)[:90]})"
    diff = float(np.abs(replay.astype(np.float64) - eager).max())
    exact = np.array_equal(replay, eager)
    ok = exact if emulator else diff <= TOL
    times = ""
    if not emulator:  # the emulator's times say nothing about a GPU's
        eager_ms = _wall_ms(lambda: fn(*b), be, repeat)
        replay_ms = _wall_ms(lambda: be.graphed(("check", h, w), fn, *b), be, repeat)
        times = f"  eager {eager_ms:8.2f} ms  replay {replay_ms:8.2f} ms"
    nodes = getattr(entry[0], "nodes", "-")  # CuPy's graphs do not count their nodes
    return ok, (f"{name:<14} {nodes:>6} nodes  max |replay - eager| {diff:.2e}{' (bit for bit)' if exact else ''}"
                f"{times}  {'ok' if ok else 'FAIL'}")


def graphs(args, device):
    h, w = EMU_SIZE if args.emulator else SIZE
    names = EMU_NAMES if args.emulator else REQUIRED + OTHERS
    failed = 0
    print(f"graph capture and replay at {h}x{w} (frames A captured, frames B replayed)")
    for name in names:
        with device(args.emulator):
            try:
                ok, line = check(name, h, w, args.emulator, 1 if args.emulator else 10)
            except Exception as e:  # a model that fails is reported, the others still run
                ok, line = False, f"{name:<14} {type(e).__name__}: {e}"
        failed += not ok
        print(line, flush=True)
    print(f"summary: graphs | {'ok' if not failed else 'FAIL'} | {len(names) - failed}/{len(names)} models "
          f"(the FlowNet family must capture)")
    return failed
