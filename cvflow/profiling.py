"""Dispatch profile: what one forward pass asks of a GPU, counted on the emulator.

:func:`profile` runs one pass of a model on the CPU emulator of the CUDA backend (the
second call of an object, so constants and prepared layers exist) and returns the
:class:`~cvflow.backends.cuda.trace.Counts` of the pass: kernel launches by name, array
ops outside the executor, matrix products with their FLOPs, host<->device copies, syncs,
allocations and the peak of live device bytes, in total and per phase (encoders, one
update, upsampling, ...). For models with an `iters` option, "one update" is the
difference between passes of 2 and 1 updates (exact, whatever the loop does outside the
update function). In dry mode kernels and products skip their arithmetic:
the counts and bytes are those of the real pass (no model branches on device values),
and a 4K profile takes seconds.

Used by tests (dispatch budgets, RAFT's 4K memory) and ``bench/gpu_profile.py`` (the
README's table and modelled latency); ``cvflow.testing.dispatch_profile`` is its entry.
A development tool at the top of the package (it makes models), like cvflow.testing.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np

from cvflow.backends.cuda.trace import Counts

# (module, function, phase) of each model family: functions wrapped while profiling, so
# that what they dispatch is attributed to the phase (the innermost wins).
_FUNCTION_PHASES = {
    "raft": [("cvflow.models.raft", "encoder", "encoders"), ("cvflow.models.raft", "update", "update"),
             ("cvflow.models.raft", "upsample_flow", "upsampling")],
    "gmflow": [("cvflow.models.gmflow", "backbone", "encoders"),
               ("cvflow.models.gmflow", "feature_transformer", "transformer"),
               ("cvflow.models.gmflow", "propagate_flow", "propagation"),
               ("cvflow.models.gmflow", "upsample_flow", "upsampling")],
    "flownet2": [("cvflow.models.flownet2", "flownet", "networks")],
}
# Backend methods attributed to a phase (wrapped on the object's backend instance).
_METHOD_PHASES = {
    "raft": {"build_corr": "correlation", "corr_lookup": "update"},
    "gmflow": {"global_matching": "matching", "local_matching": "matching"},
    "flownet2": {"warp": "warps", "brightness_error": "warps", "channel_norm": "warps"},
}


@dataclass
class Profile:
    """One profiled pass: `total` and `phases` (name -> Counts) of the pass; `update`:
    one update's Counts (a pass of 2 updates minus one of 1) for models with updates, else None."""

    name: str
    height: int
    width: int
    options: dict
    dry: bool
    total: Counts
    phases: dict = field(default_factory=dict)
    update: Counts | None = None
    precision: str = "fp32"
    fallbacks: int = 0  # half storage: op calls of the pass that ran through fp32 scratch

    def summary(self) -> dict:
        """The table row: counts of the pass (and of one update) as plain numbers."""
        t = self.total
        row = {"model": self.name, "size": f"{self.height}x{self.width}", "precision": self.precision,
               "fallbacks": self.fallbacks,
               "launches": sum(t.launches.values()), "ex_matmuls": t.ex_matmuls,
               "executor_calls": t.executor_calls, "other_ops": t.other_ops, "matmuls": t.matmuls,
               "tflop": t.flops / 1e12, "h2d": t.h2d, "d2h": t.d2h, "syncs": t.syncs, "allocs": t.allocs,
               "peak_mib": t.peak / 2**20}
        if self.update is not None:
            row.update(update_calls=self.update.executor_calls, update_ops=self.update.other_ops)
        return row


def random_weights(name, seed=0):
    """Fan-in-scaled uniform weights of the model's checkpoint shapes (running variances 1)."""
    from cvflow.models.base import REGISTRY

    model = REGISTRY[name]
    rng = np.random.default_rng(seed)
    out = {}
    for key, shape in model.param_shapes(model.config).items():
        if key.endswith("running_var"):
            out[key] = np.ones(shape, np.float32)
            continue
        fan = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        scale = np.sqrt(3.0 / fan) if len(shape) > 1 else 0.05
        out[key] = np.asarray(scale * (2 * rng.random(shape, dtype=np.float32) - 1), np.float32)
    return out


def frames(height, width, seed=1):
    """A uint8 BGR frame pair (H, W, 3): noise and the same noise shifted 3 px right."""
    a = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return a, np.roll(a, 3, axis=1)


@contextlib.contextmanager
def _phases(tracer, family, be):
    """Wrap the family's functions and the backend's methods so their work lands in phases."""
    import importlib

    def wrap(fn, phase, count=True):
        def inner(*args, **kwargs):
            with tracer.phase(phase, count):
                return fn(*args, **kwargs)
        return inner

    undo = []
    try:
        for mod_name, fn_name, phase in _FUNCTION_PHASES.get(family, []):
            mod = importlib.import_module(mod_name)
            fn = getattr(mod, fn_name)
            setattr(mod, fn_name, wrap(fn, phase))
            undo.append((mod, fn_name, fn))
        named = {phase for _, _, phase in _FUNCTION_PHASES.get(family, [])}
        for meth, phase in _METHOD_PHASES.get(family, {}).items():  # entries: the function's, if any
            setattr(be, meth, wrap(getattr(be, meth), phase, phase not in named))
            undo.append((be, meth, None))
        yield
    finally:
        for obj, attr, fn in reversed(undo):
            if fn is None:
                delattr(obj, attr)
            else:
                setattr(obj, attr, fn)


def profile(name, height, width, options=None, dry=True, weights=None, algo=None, precision="fp32") -> Profile:
    """Profile one `calc` of model `name` on a (height, width) uint8 pair on the emulator
    (host frames in, host flow out), after one unrecorded call. dry: kernels and products
    skip their arithmetic. weights: the model's weights (default `random_weights`);
    algo: an existing object made inside `cvflow.testing.cuda_emulator()` (then
    name/weights unused). precision: the object's mode (`create(precision=)`)."""
    from cvflow.api import create
    from cvflow.backends.cuda import executor
    from cvflow.models.base import REGISTRY

    options = dict(options or {})
    f0, f1 = frames(height, width)
    ex = executor.push_emulator()  # as cvflow.testing.cuda_emulator(), which imports this module
    try:
        tracer = ex.tracer
        was_dry, tracer.dry = tracer.dry, dry
        try:
            of = algo if algo is not None else create(
                name, weights=random_weights(name) if weights is None else weights, device="cuda",
                precision=precision, **options)
            model = REGISTRY[of.name] if hasattr(of, "name") and of.name in REGISTRY else REGISTRY[name]
            be = of._backend
            of.use_graphs = False                 # the eager pass: what a captured graph holds, call by call
            of.calc(f0, f1, None)                 # warm: constants, prepared layers, kernels built
            fallbacks = getattr(be, "fallbacks", None)  # half storage: ops run through fp32 scratch
            if fallbacks is not None:
                fallbacks.clear()
            with _phases(tracer, model.family, be), tracer.record() as total:
                of.calc(f0, f1, None)
            fallbacks = sum(fallbacks.values()) if fallbacks is not None else 0
            update = None
            if "iters" in model.options:
                iters = int(of.get("iters"))
                counts = []
                for k in (1, 2):  # every update dispatches the same: the first two tell
                    of.set("iters", k)
                    with tracer.record() as c:
                        of.calc(f0, f1, None)
                    counts.append(c)
                of.set("iters", iters)
                update = _difference(counts[1], counts[0])
        finally:
            tracer.dry = was_dry
    finally:
        executor.pop_emulator()
    return Profile(name, height, width, options, dry, total, dict(total.phases), update,
                   getattr(of, "precision", precision), fallbacks)


def _difference(a: Counts, b: Counts) -> Counts:
    """a - b, counter by counter (one update: a pass with one more update minus the pass)."""
    d = Counts()
    d.launches = a.launches - b.launches
    d.ops = a.ops - b.ops
    for attr in ("matmuls", "flops", "ex_matmuls", "h2d", "h2d_bytes", "d2h", "d2h_bytes", "syncs", "allocs",
                 "alloc_bytes"):
        setattr(d, attr, getattr(a, attr) - getattr(b, attr))
    d.peak = max(a.peak, b.peak)
    d.entries = 1
    return d
