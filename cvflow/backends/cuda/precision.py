"""Half-precision storage on the CUDA backend (issue 20: `precision="fp16"` / `"bf16"`).

Activations, weights and the correlation volume are stored in half (float16, or uint16
bfloat16 bits: `k_dtype`); products are cuBLAS GemmEx with fp32 compute; the kernels
accumulate in float. Flows and coordinates stay float32 (`FLOAT_OUT`, `FLOAT_ARGS`), and
so does the pass's output (`float_output`). Models do not change: the storage type is
decided here, op by op, at the backend's boundary.

Each op has the kernels it launches (`KERNELS`). When every one of them has typed entry
points (`<name>_f16`, `<name>_bf16` in its `.cu`), the op runs on half storage as it is
(`typed`). When not, it *falls back*: its half inputs are converted to float32 scratch
(kernels/convert.cu), the float32 op runs, and its output is rounded back to half; an
in-place op writes its result back into the half buffer. The numbers are those of half
storage at the op's boundary (weights rounded to half as well), only slower; every
conversion is a kernel, so a pass stays capturable into a CUDA graph. `fallbacks`
counts, per op, the calls that fell back (tests expect none once every kernel is typed).
"""
from __future__ import annotations

import functools
from collections import Counter
from dataclasses import replace

import numpy as np

from cvflow.backends.cuda import k_conv, k_dtype, k_glue
from cvflow.backends.cuda.executor import i32, launch_1d

_CONV = ("im2col:im2col", "im2col:im2col_parts", "act:bias_act")
_GRU = _CONV + ("gru:gru_gates", "gru:gru_blend")
_PATCH = ("patch_corr:patch_correlation",)
_COPY = ("strided:strided_copy",)
_UNTYPED = ("-:wrapper",)  # wrappers that take no half storage yet, whatever their kernels
KERNELS = {
    "conv2d": _CONV, "conv2d_": _CONV, "same_conv": _CONV, "conv_bn": _CONV + ("norm:scale_shift",),
    "conv_transpose2d": ("col2im:col2im", "act:bias_act"),
    "depthwise_conv2d": ("depthwise:depthwise_conv2d",),
    "linear": _COPY + ("act:bias_act",), "gelu": _COPY + ("act:gelu",), "gelu_": ("act:gelu",),
    "frames": _UNTYPED,  # frames as uploaded in, the backend's storage out (its dtype=)
    "layer_norm": ("layer_norm:layer_norm_last",),
    "relu": _COPY, "tanh": _COPY, "contiguous": _COPY, "crop": _COPY,
    "relu_": ("act:bias_act",), "leaky_relu_": ("act:bias_act",), "add_bias_": ("act:bias_act",),
    "add_relu_": ("act:add_relu",),
    "instance_norm": ("norm:inorm_partial", "norm:inorm_apply"),
    "batch_norm_": ("norm:scale_shift",),
    "channel_norm": ("norm:channel_norm",),
    "brightness_error": ("norm:channel_norm_diff",),
    "mean_free_pair": _UNTYPED,  # frames as uploaded in, the backend's storage out (its dtype=)
    "add": ("strided:binary",), "sub": ("strided:binary",), "scale": ("strided:scale",),
    "add_scaled": ("strided:add_scaled",), "concat": _COPY,
    "resize_bilinear": ("upsample:resize_bilinear",),
    "convex_upsample": ("upsample:convex_upsample",),
    "warp": ("sample:bilinear_sample",),
    "build_corr": ("corr_lookup:raft_corr_dots", "pool:avg_pool2x2"),
    "corr_lookup": ("corr_lookup:raft_corr_lookup", "corr_lookup:raft_corr_lookup4", "corr_lookup:raft_corr_dots",
                    "corr_lookup:raft_corr_interp"),
    "patch_correlation": _PATCH,
    "attention": ("softmax:softmax_rows",),
    "window_attention": ("softmax:softmax_rows", "window:window_partition", "window:window_merge"),
    "global_matching": ("softmax:softmax_rows", "matching:global_match_flow"),
    "local_matching": _PATCH + ("matching:local_match_flow",),
    "local_attention": _PATCH + ("local_attention:local_attention",),
    "hardtanh": _COPY + ("clamp:clamp",), "upsample_nearest": _COPY + ("nearest:upsample_nearest",),
    "avg_pool2x2": ("pool:avg_pool2x2",),
    "conv_gru": _GRU, "sep_conv_gru": _GRU, "flow_head": _CONV,
}
# Ops whose output is a flow (or coordinates): float32 whatever their inputs.
FLOAT_OUT = frozenset({"convex_upsample", "global_matching", "local_matching"})
# The output follows the first array argument's storage (flows stay float32, maps half);
# every other op's output is an activation, stored in half.
FOLLOW = frozenset({"add", "sub", "scale", "add_scaled", "concat", "resize_bilinear", "warp", "crop",
                    "contiguous", "hardtanh", "upsample_nearest", "avg_pool2x2", "relu", "tanh"})
# In place: the result is written over the first argument (its half buffer).
IN_PLACE = frozenset({"relu_", "leaky_relu_", "add_bias_", "add_relu_", "batch_norm_", "gelu_"})
# Positional arguments that stay float32 on a typed op (coordinates, flows).
FLOAT_ARGS = {"corr_lookup": (1,), "warp": (1,), "convex_upsample": (0,), "local_attention": (2,)}
# Arguments passed as they are (the frames as uploaded).
NO_ARGS = frozenset({"frames", "mean_free_pair"})



@functools.lru_cache(maxsize=None)
def has_typed(kernel: str) -> bool:
    """Whether kernels/<file>.cu has both typed entry points of `kernel` ("file:function")."""
    from cvflow.backends.cuda.emulator import kernel_source, parse_kernels

    stem, _, func = kernel.partition(":")
    try:
        names = parse_kernels(kernel_source(stem))
    except OSError:
        return False
    return f"{func}_f16" in names and f"{func}_bf16" in names


def typed(op: str) -> bool:
    """Whether `op` runs on half storage as it is (else it falls back, see the module)."""
    return all(has_typed(k) for k in KERNELS[op])


def _ptr(a):
    data = a.data
    return data.ptr if hasattr(data, "ptr") else a.__array_interface__["data"][0]


def _is_half(x):
    return getattr(x, "dtype", None) is not None and np.dtype(x.dtype) in (np.float16, np.uint16) \
        and hasattr(x, "shape") and not isinstance(x, np.generic)


def _owner(ex, x):
    owner = x
    while isinstance(getattr(owner, "base", None), ex.xp.ndarray) and owner.base.dtype == x.dtype:
        owner = owner.base
    return owner


def _convert_into(ex, src, dst):
    """float32 src -> half dst (same size, both C-contiguous), rounded to nearest even."""
    name = "f16" if dst.dtype == np.float16 else "bf16"
    launch_1d(ex, f"convert:f32_to_{name}", src.size, src, dst, i32(src.size))


def float_twin(ex, x):
    """(float32 copy of half x, the float32 copy of x's buffer, x's buffer): x's values
    exactly. A slice of a C-contiguous buffer (RAFT's context split) stays that slice of
    the buffer's copy, so an in-place op on the twin can be written back whole; other
    layouts are copied first (an array op, which a graph capture refuses)."""
    if x.flags.c_contiguous:
        return (f := k_dtype.to_float(ex, x)), f, x
    owner = _owner(ex, x)
    index = _slice_of(x, owner) if owner.flags.c_contiguous else None
    if index is None:
        x = ex.xp.ascontiguousarray(x)
        return (f := k_dtype.to_float(ex, x)), f, x
    whole = k_dtype.to_float(ex, owner)
    return whole[index], whole, owner


def _slice_of(x, owner):
    """The index of owner (C-contiguous) that gives view x (unit steps, same axes), or None."""
    item = x.itemsize
    if x.ndim != owner.ndim or x.strides != owner.strides:
        return None
    off = (_ptr(x) - _ptr(owner)) // item
    start = []
    for n, s in zip(owner.shape, owner.strides):
        start.append((off // (s // item)) % n if s else 0)
    if any(i + m > n for i, m, n in zip(start, x.shape, owner.shape)):
        return None
    return tuple(slice(i, i + m) for i, m in zip(start, x.shape))


class HalfStorage:
    """Mixin of `CudaBackend` (before it) for precision "fp16" / "bf16"; see the module."""

    def _half_init(self):
        self.storage = np.dtype(k_dtype.STORAGE[self.precision])
        self.fallbacks = Counter()

    # -- conversions ------------------------------------------------------------------------
    def to_half(self, x):
        """A float32 device array (any layout) in this backend's storage type."""
        if x.dtype == self.storage:
            return x
        if _is_half(x):
            x = self.to_float(x)
        if not x.flags.c_contiguous:
            x = k_glue.copy(self.ex, x)
        return k_dtype.to_storage(self.ex, x, self.precision)

    def to_float(self, x):
        return float_twin(self.ex, x)[0] if _is_half(x) else x

    def _map(self, v, fn, dicts=True):
        """fn over the arrays in v (lists, tuples, Pending parts, plain dicts such as RAFT's
        correlation state); a container none of whose arrays changed is returned itself (a
        weight dict keeps its identity: prepared layers are keyed by it)."""
        if isinstance(v, k_conv.Pending):
            raw = fn(v.raw)
            return v if raw is v.raw else k_conv.Pending(raw, v.bias, v.act)
        if isinstance(v, (list, tuple)):
            new = [self._map(a, fn, dicts) for a in v]
            return v if all(a is b for a, b in zip(new, v)) else type(v)(new)
        if dicts and type(v) is dict:
            new = {k: self._map(a, fn, dicts) for k, a in v.items()}
            return v if all(new[k] is a for k, a in v.items()) else new
        if isinstance(v, self.xp.ndarray):
            return fn(v)
        return v

    def _any_half(self, v):
        found = []
        self._map(v, lambda a: found.append(_is_half(a)) or a)
        return any(found)

    # -- the boundary ---------------------------------------------------------------------------
    def _half_call(self, op, fn, args, kw):
        local = self._local
        if getattr(local, "half_depth", 0):
            return fn(*args, **kw)  # inside another op: that op's boundary decided
        halves = self._any_half(args) or self._any_half(kw)
        if not halves and (op in FOLLOW or op in IN_PLACE or op in FLOAT_OUT):
            return fn(*args, **kw)  # float32 in, float32 out (flows, coordinates)
        local.half_depth = 1
        try:
            return self._boundary(op, fn, args, kw, halves)
        finally:
            local.half_depth = 0

    def _target(self, op, args):
        """The storage of op's output: float32 for flows, half for activations."""
        if op in FLOAT_OUT:
            return np.dtype(np.float32)
        if op in FOLLOW:
            return self.storage if self._any_half(args[0]) else np.dtype(np.float32)
        if op in ("attention", "local_attention") and len(args) > 2 and not _is_half(args[2]):
            return np.dtype(np.float32)  # attention of a flow (GMFlow's propagation): a flow
        return self.storage

    def _boundary(self, op, fn, args, kw, halves):
        target = self._target(op, args)
        if op in IN_PLACE and _is_half(args[0]):
            return self._in_place(op, fn, args, kw)
        if op in NO_ARGS:
            out = fn(*args, **kw)
        elif typed(op):
            keep = FLOAT_ARGS.get(op, ())
            cast = self.to_float if op in FOLLOW and target == np.float32 else self.to_half
            args = tuple(self._map(a, self.to_float if i in keep else cast, dicts=False) for i, a in enumerate(args))
            out = fn(*args, **kw)
        else:
            if halves:
                self.fallbacks[op] += 1
            self._local.half_fallback = True
            try:
                out = fn(*self._map(args, self.to_float), **self._map(kw, self.to_float))
            finally:
                self._local.half_fallback = False
        return self._map(out, self.to_float if target == np.float32 else self.to_half)

    def _in_place(self, op, fn, args, kw):
        x = args[0]
        if typed(op) and (x.flags.c_contiguous or op == "relu_"):  # views: glue for float32 only
            rest = tuple(self._map(a, self.to_half, dicts=False) if op == "add_relu_" else a for a in args[1:])
            return fn(x, *rest, **kw)
        self.fallbacks[op] += 1
        view, flat, owner = float_twin(self.ex, x)
        self._local.half_fallback = True
        try:
            fn(view, *self._map(args[1:], self.to_float), **self._map(kw, self.to_float))
        finally:
            self._local.half_fallback = False
        _convert_into(self.ex, flat, owner)
        return x

    # -- what the boundary cannot see -----------------------------------------------------------
    def _fusing(self):
        # A fused convolution leaves its epilogue to the consumer's gather: only when the
        # convolutions run on half storage as they are.
        return super()._fusing() and typed("conv2d")

    def _held_once(self, p, layer):
        return layer  # the placed float32 weight is not the prepared (half) matrix

    def prepared(self, layer, kind, make):
        """Derived weights in storage: convolution and linear matrices, depthwise taps and
        their biases in half (rounded to nearest even: the kernels read a bias in x's
        storage type); norm affines stay float32. An op that falls back reads the same
        rounded weights as float32 (a second prepared entry)."""
        if kind not in _HALF_WEIGHTS:
            return super().prepared(layer, kind, make)
        field = _HALF_WEIGHTS[kind]
        half = super().prepared(layer, kind, lambda: _with(make(), field, self.to_half))
        if not getattr(self._local, "half_fallback", False):
            return half
        return super().prepared(layer, kind + "_f32", lambda: _with(half, field, self.to_float))

    def float_output(self, out):
        """The pass's result as float32 (half storage converted exactly)."""
        return self._map(out, self.to_float)

    def to_host(self, x):
        host = super().to_host(x)
        if host.dtype == np.uint16:
            return k_dtype.bf16_float(host)
        return host.astype(np.float32) if host.dtype == np.float16 else host


# prepared kind -> the fields holding its weights (ConvLayer attributes or dict keys)
_HALF_WEIGHTS = {"cuda_conv": ("mat", "bias"), "cuda_tconv": ("mat", "bias"), "cuda_gru_hx": ("mat", "bias"),
                 "cuda_linear": ("wt", "bias"), "cuda_dw": ("taps", "bias")}


def _with(layer, fields, fn):
    get = layer.get if isinstance(layer, dict) else lambda f: getattr(layer, f)
    new = {f: fn(get(f)) for f in fields if get(f) is not None}
    return {**layer, **new} if isinstance(layer, dict) else replace(layer, **new)


def _boundary_method(op):
    def method(self, *args, **kw):
        return self._half_call(op, getattr(super(HalfStorage, self), op), args, kw)

    method.__name__ = op
    return method


for _op in KERNELS:
    setattr(HalfStorage, _op, _boundary_method(_op))
