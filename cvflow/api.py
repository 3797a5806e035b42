"""The algorithm object users hold, mirroring cv2.DenseOpticalFlow, and `create`.

`create(name)` resolves the model definition, builds the backend of the device
(`cvflow.backends`: it owns prepared layers, workspace and constants), loads and
verifies the weights and places them on it once; `calc` validates frames and runs the
forward pass.
"""
from __future__ import annotations

import numbers
import os
import warnings
from typing import Any, Mapping

import numpy as np

from cvflow.arrays import get_xp
from cvflow.backends import make_backend
from cvflow.backends.threads import check_threads
from cvflow.errors import CvflowTypeError, InputError, InputRangeWarning, ModelNotFoundError
from cvflow.inputs import (as_uploaded, camel, check_frame, check_options, check_output_flow, describe, snake,
                           to_bgr_float, unit_range, unknown_option)
from cvflow.models.base import REGISTRY, ModelDef
from cvflow.ops.pad import pad_replicate
from cvflow.settings import AlgorithmSettings
from cvflow.uncertainty import UncertaintyOutputs

# Same value as cv2.OPTFLOW_USE_INITIAL_FLOW, so cv2's constant works with setFlags.
OPTFLOW_USE_INITIAL_FLOW = 4


def _registry() -> dict[str, ModelDef]:
    import cvflow.models  # noqa: F401  # registers the families on first use

    return REGISTRY


def list_models(verbose: bool = False) -> list:
    """Names accepted by `create`, sorted. verbose=True: one dict per model instead,
    {"name", "description", "default", "weights"}: the `weights=` tags (training data,
    published metrics, licence, URL) and release file (`cvflow.weights.describe_weights`)."""
    names = sorted(_registry())
    if not verbose:
        return names
    from cvflow.weights import describe_weights

    return [{"name": n, "description": _registry()[n].description, **describe_weights(n)} for n in names]


def get_model(name: str) -> ModelDef:
    """The definition registered as `name`; unknown names list the valid ones."""
    if not isinstance(name, str):
        raise CvflowTypeError(f"model name must be a str, got {type(name).__name__}")
    models = _registry()
    key = name.strip().lower()
    if key not in models:
        raise ModelNotFoundError(f"unknown model {name!r}; valid models: {', '.join(sorted(models))}")
    return models[key]


class OpticalFlow(AlgorithmSettings, UncertaintyOutputs):
    """A deep optical-flow algorithm with cv2.DenseOpticalFlow's interface (and
    cv2.Algorithm's: empty, clear, save, write, read, getDefaultName).

    calc(I0, I1, flow=None) -> (H, W, 2) float32, flow[y, x] = (dx, dy) in pixels,
    such that I1[y + dy, x + dx] ~ I0[y, x].
    """

    def __init__(self, model: ModelDef, params: dict, be, options: Mapping[str, Any]):
        self._model = model
        self._params = params
        self._backend = be
        self._options = check_options(model, options)
        self._flags = 0
        self._weights_path = None  # the checkpoint create() loaded (None: a mapping of arrays)
        self._warned_range = False
        self._last_info = None  # the last calc's extra outputs (ModelDef.info_channels), device array

    # -- cv2.DenseOpticalFlow surface -------------------------------------------------
    def calc(self, I0, I1, flow=None):
        """Flow from I0 to I1 (uint8 or 0..255 float, BGR H x W x 3 or gray H x W).

        A `flow` array of shape (H, W, 2) float32 is filled in place and returned. With
        the OPTFLOW_USE_INITIAL_FLOW flag (or the `warm_start` option) it is also the
        initial estimate, for models that accept one.
        """
        if flow is not None:
            check_output_flow(flow)
        img0, img1 = self._frames(I0, I1)
        init = self._initial_flow(flow, *I0.shape[:2])
        if init is not None:
            init = self._backend.asarray(init)
        out = self._run(img0, img1, init, self._one_way_options())
        out, self._last_info = self._split_info(out, I0)
        return self._deliver(out, flow, I0)

    def calcBidirectional(self, I0, I1, occlusion=False, out_of_frame=False):
        """Flow both ways between I0 and I1 (frames as in `calc`), sharing work between the
        directions where the model allows (RAFT: the feature encoder's pass over both frames;
        FlowNet2 family: one batch of two; GMFlow: the features).

        Returns the tuple (fw, bw): fw = flow I0 -> I1 and bw = flow I1 -> I0, each a new
        (H, W, 2) float32 array, as `calc(I0, I1)` and `calc(I1, I0)` give them (to float32
        rounding). With occlusion=True it returns (fw, bw, occ0, occ1), adding two (H, W)
        bool masks from `cvflow.occlusion_mask` with its default thresholds: occ0 =
        occlusion_mask(fw, bw), True where a pixel of I0 has no match in I1 (covered), and
        occ1 = occlusion_mask(bw, fw), True where a pixel of I1 has none in I0 (uncovered).
        out_of_frame=True also marks the pixels whose flow leaves the other frame (see
        `occlusion_mask`). No initial flow is used (OPTFLOW_USE_INITIAL_FLOW and `warm_start`
        are ignored).
        """
        if not isinstance(occlusion, (bool, np.bool_)):
            raise CvflowTypeError(f"`occlusion` must be a bool, got {occlusion!r}")
        if not isinstance(out_of_frame, (bool, np.bool_)):
            raise CvflowTypeError(f"`out_of_frame` must be a bool, got {out_of_frame!r}")
        if out_of_frame and not occlusion:
            raise InputError("`out_of_frame` is about the occlusion masks: pass occlusion=True with it")
        img0, img1 = self._frames(I0, I1)
        options = self._one_way_options()
        if self._model.forward_both is None:
            fw = self._run(img0, img1, None, options)
            if self._graphs_on():  # a replay's output is the graph's buffer: the next one overwrites it
                fw = self._backend.xp.array(fw, copy=True)
            bw = self._run(img1, img0, None, options)
        else:
            fw, bw = self._run(img0, img1, None, options, both=True)
        (fw, self._last_info), (bw, _) = self._split_info(fw, I0), self._split_info(bw, I0)
        fw, bw = self._deliver(fw, None, I0), self._deliver(bw, None, I0)
        if not occlusion:
            return fw, bw
        from cvflow.occlusion import occlusion_mask

        return fw, bw, occlusion_mask(fw, bw, out_of_frame=out_of_frame), \
            occlusion_mask(bw, fw, out_of_frame=out_of_frame)

    def calc_batch(self, frames0, frames1, flows=None) -> list:
        """Flow for each pair (frames0[i], frames1[i]); `flows[i]`, when given, as in `calc`.

        Returns a list of (H, W, 2) float32 arrays. Pairs run one after another: the
        forward pass is already BLAS/GPU-parallel, and sizes may differ between pairs.
        """
        frames0, frames1 = list(frames0), list(frames1)
        if len(frames0) != len(frames1):
            raise InputError(f"`frames0` and `frames1` must have the same length, got {len(frames0)} and {len(frames1)}")
        flows = [None] * len(frames0) if flows is None else list(flows)
        if len(flows) != len(frames0):
            raise InputError(f"`flows` must have one entry per pair, got {len(flows)} for {len(frames0)} pairs")
        return [self.calc(a, b, f) for a, b, f in zip(frames0, frames1, flows)]

    def collectGarbage(self) -> None:
        """Release the memory kept between calls: the CPU activation arena and this
        thread's convolution scratch buffers, or the CUDA executor's memory pools."""
        self._backend.release()

    def getDefaultName(self) -> str:
        return f"DenseOpticalFlow.cvflow.{self._model.name}"

    def getFlags(self) -> int:
        return self._flags

    def setFlags(self, flags: int) -> None:
        if not isinstance(flags, numbers.Integral):
            raise CvflowTypeError(f"flags must be an int, got {type(flags).__name__}")
        self._flags = int(flags)

    # -- options --------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._model.name

    @property
    def device(self) -> str:
        return self._backend.name

    @property
    def precision(self) -> str:
        """The numeric mode of the forward pass (`create(precision=)`): "fp32", "tf32",
        "fp16" or "bf16"."""
        return self._backend.precision

    def getPrecision(self) -> str:
        return self.precision

    @property
    def threads(self):
        """CPU threads of each call (`create(threads=)`; None: the default, resolved per call)."""
        return getattr(self._backend, "threads", None)

    @property
    def options(self) -> dict:
        """A copy of the current options."""
        return dict(self._options)

    def get(self, key: str):
        if key not in self._options:
            raise InputError(unknown_option(self._model, key))
        return self._options[key]

    def set(self, key: str, value) -> None:
        self._options.update(check_options(self._model, {key: value}, base={}))

    def __getattr__(self, attr: str):
        # getIters()/setIters(v) etc. for every option, as cv2 objects expose them.
        if attr[:3] in ("get", "set") and len(attr) > 3:
            key = snake(attr[3:])
            if key in self.__dict__.get("_options", {}):
                if attr.startswith("get"):
                    return lambda: self.get(key)
                return lambda value: self.set(key, value)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {attr!r}")

    def __dir__(self):
        extra = [f"{p}{camel(k)}" for k in self._options for p in ("get", "set")]
        return sorted(set(super().__dir__()) | set(extra))

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self._options.items())
        mode = "" if self.precision == "fp32" else f" ({self.precision})"
        return f"<cvflow {self._model.name} on {self.device}{mode}{', ' + opts if opts else ''}>"

    # -- internals ------------------------------------------------------------------
    def _prepare(self):
        """One forward pass on a blank pair of the model's `prepare_size`: every layer
        derives its matrices now, so the first `calc` costs what every later one does
        (eager: no graph is kept for this size)."""
        side = self._model.prepare_size
        if side:
            blank = self._backend.asarray(np.zeros((side, side, 3), np.float32))
            self._run(blank, blank, None, self._one_way_options(), graph=False)

    def _one_way_options(self):
        """The options of a `calc` pass: one direction even when `bidirectional` is set
        (see calcBidirectional)."""
        opts = self._options
        return {**opts, "bidirectional": False} if opts.get("bidirectional") else opts

    def _frames(self, I0, I1):
        """Validate a frame pair; return both as float32 (H, W, 3) BGR on the model's device."""
        check_frame("I0", I0)
        check_frame("I1", I1)
        if I0.shape[:2] != I1.shape[:2]:
            raise InputError(f"`I0` and `I1` must have the same size, got {describe(I0)} and {describe(I1)}")
        if not self._warned_range and (seen := unit_range(I0, I1)) is not None:
            self._warned_range = True  # once per object: a video would repeat it every pair
            warnings.warn(f"`I0` and `I1` are float frames with values in [{seen[0]:.3g}, {seen[1]:.3g}]; "
                          "cvflow expects uint8 or float in 0..255 (as cv2.imread gives), so the flow will "
                          "be poor: multiply the frames by 255", InputRangeWarning, stacklevel=3)
        be = self._backend
        if hasattr(be, "graphed") and self._model.device_frames:  # the graph's inputs: host arrays
            img0, img1 = as_uploaded(I0), as_uploaded(I1)
            if self._graphs_on():
                return img0, img1
            return be.asarray(img0, dtype=img0.dtype), be.asarray(img1, dtype=img1.dtype)
        return to_bgr_float(I0, be), to_bgr_float(I1, be)

    def _wants_initial_flow(self) -> bool:
        return bool(self._flags & OPTFLOW_USE_INITIAL_FLOW) or bool(self._options.get("warm_start", False))

    def _initial_flow(self, flow, h, w):
        if flow is None or not self._wants_initial_flow():
            return None
        if getattr(flow, "shape", None) != (h, w, 2) or getattr(flow, "dtype", None) != np.float32:
            raise InputError(f"initial `flow` must be a ({h}, {w}, 2) float32 array, got {describe(flow)}")
        if not bool(get_xp(flow).isfinite(flow).all()):
            raise InputError("initial `flow` contains NaN or Inf")
        return flow

    # CUDA graphs (CUDA backend): each pass is captured once per (frame shape and dtype,
    # options, initial flow or not, one or both directions) and replayed; False: eager.
    use_graphs = True

    def _graphs_on(self) -> bool:
        return self.use_graphs and hasattr(self._backend, "graphed")

    def _run(self, img0, img1, init, options, both=False, graph=True):
        """Forward pass in the backend's workspace; results come back as arrays of their
        own (a CPU result may be an arena buffer or a view of one). both: the model's
        `forward_both` (a tuple). On the CUDA backend the pass is a replayed graph
        (`_run_graphed`) unless graph=False."""
        be = self._backend
        if graph and self._graphs_on():
            return self._run_graphed(img0, img1, init, options, both)
        with be.workspace():
            out = be.float_output(self._forward(img0, img1, init, options, both))
        if isinstance(out, tuple):
            return tuple(be.detach(o) for o in out)
        return be.detach(out)

    def _run_graphed(self, img0, img1, init, options, both):
        """`_run` through `CudaBackend.graphed`: the frames (as uploaded: host arrays go
        straight into the graph's input buffers) and the initial flow are the graph's
        inputs. Frames below the model's minimum size are padded here, on the host, as
        `_forward` pads them. Returns the graph's output buffers (valid until the next
        call with the same key; `_deliver` copies them)."""
        be, model = self._backend, self._model
        h, w = img0.shape[:2]
        m = model.min_size
        crop = None
        if (h < m or w < m) and not isinstance(img0, be.xp.ndarray):  # host frames
            ph, pw = max(0, m - h), max(0, m - w)
            pads = (ph // 2, ph - ph // 2, pw // 2, pw - pw // 2)
            img0, img1 = pad_replicate(img0, pads), pad_replicate(img1, pads)
            if init is not None:
                init = be.to_host(init)
                init = pad_replicate(init, pads)
            crop = (slice(pads[0], pads[0] + h), slice(pads[2], pads[2] + w))
        key = ("pass", both, tuple(img0.shape), str(img0.dtype), init is not None, tuple(sorted(options.items())))

        def run(a, b, *rest):
            with be.workspace():
                return be.float_output(self._forward(a, b, rest[0] if rest else None, options, both))

        out = be.graphed(key, run, img0, img1, *(() if init is None else (init,)))
        outs = out if isinstance(out, tuple) else (out,)
        if crop is not None:
            outs = tuple(o[crop] for o in outs)
        return outs if isinstance(out, tuple) else outs[0]

    def _forward(self, img0, img1, init, options, both=False):
        """Forward pass, padding frames below the model's minimum size and cropping back."""
        h, w = img0.shape[:2]
        m = self._model.min_size
        if h >= m and w >= m:
            return self._call(img0, img1, init, options, both)
        ph, pw = max(0, m - h), max(0, m - w)
        pads = (ph // 2, ph - ph // 2, pw // 2, pw - pw // 2)
        img0, img1 = pad_replicate(img0, pads), pad_replicate(img1, pads)
        if init is not None:
            init = pad_replicate(init, pads)
        out = self._call(img0, img1, init, options, both)
        crop = (slice(pads[0], pads[0] + h), slice(pads[2], pads[2] + w))
        if isinstance(out, tuple):
            return tuple(o[crop] for o in out)
        return out[crop]

    def _call(self, img0, img1, init, options, both):
        model = self._model
        if both:
            return model.forward_both(self._params, img0, img1, model.config, options)
        return model.forward(self._params, img0, img1, model.config, options, init)

    def _deliver(self, out, flow, like):
        """Return on the caller's side: NumPy for NumPy frames; fill `flow` in place if it fits."""
        if isinstance(like, np.ndarray):
            out = self._backend.to_host(out)
        elif self._graphs_on():  # a graph's output buffer: the next replay overwrites it
            out = self._backend.xp.array(out, copy=True)
        out = out.astype(np.float32, copy=False)
        if flow is not None and getattr(flow, "shape", None) == out.shape and flow.dtype == np.float32 \
                and get_xp(flow) is get_xp(out):
            flow[...] = out
            return flow
        return out


def create(name: str, *, weights=None, device: str = "auto", threads=None, precision=None,
           **options) -> OpticalFlow:
    """Create a deep optical-flow algorithm.

    name: one of `list_models()`. weights: a checkpoint path (.pth / .pth.tar; the
    authors' or torchvision's key layout), a cvflow-converted .npz, a mapping of
    checkpoint key -> array, a tag (RAFT: "C_T_SKHT_V2", ...; `list_models(verbose=True)`),
    or None: the model's default tag, else its release file, from the caches
    (CVFLOW_HOME, default ~/.cache/cvflow; torch hub's for tags), downloaded when the
    registry has a URL.
    device: "auto" (GPU when CuPy and a device are present), "cpu" or "cuda".
    threads: CPU threads of every call of this object (calc, calcBidirectional,
    calc_batch, and the warm-up pass here): BLAS, cvflow's own pool and OpenCV are bounded
    to it during the call and restored after. None: $CVFLOW_NUM_THREADS when set, else
    the cores this process may use (os.sched_getaffinity). On a machine shared with other
    busy processes, pass this process's share (e.g. 1): spinning BLAS threads that lose
    their core stall each other.
    precision: "fp32" (parity with the authors' code), "tf32" (products on TF32 tensor
    cores), "fp16" or "bf16" (half-precision storage, fp32 accumulation); the CUDA backend
    only: the CPU refuses all but "fp32". None: the device's default (fp32 on the CPU;
    on a GPU `cvflow.backends.GPU_DEFAULT_PRECISION`, see the README's "Precision").
    options: model options, e.g. iters=12 for RAFT.
    """
    from cvflow.settings import cached_weights_path
    from cvflow.weights import load_model_weights

    model = get_model(name)
    threads = check_threads(threads)
    be = make_backend(device, model.reuse_bytes, threads, precision)
    algo = OpticalFlow(model, {}, be, options)  # checks the options before any loading
    flat = load_model_weights(model, weights)
    algo._params = be.place(flat)
    if isinstance(weights, (str, os.PathLike)) and os.path.exists(weights):
        algo._weights_path = os.path.abspath(os.fspath(weights))
    elif weights is None or isinstance(weights, str):  # the default or a tag: the cached file read
        algo._weights_path = cached_weights_path(model, weights)
    algo._prepare()
    return algo
