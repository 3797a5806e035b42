"""TF32 products on CuPy: the executor's own cuBLAS handle, in TF32 tensor-op math mode.

CuPy's `matmul` runs on CuPy's per-device handle, whose mode only the process-wide
`CUPY_TF32` environment variable changes. cvflow's `precision="tf32"` is per object, so
the CUDA executor keeps a handle of its own with `CUBLAS_TF32_TENSOR_OP_MATH` set and
calls `cublasSgemmStridedBatched` on it directly; FP32 objects keep CuPy's `matmul`.
Two objects of different precisions therefore share one device and one process.

Row-major operands map onto column-major cuBLAS as C^T = B^T A^T: each operand is read in
place when its last or second-to-last axis has unit stride (a transposed view becomes
`CUBLAS_OP_T`), and copied to C order otherwise. Batch axes broadcast with stride 0.
"""
from __future__ import annotations

import threading

import numpy as np

from cvflow.errors import DeviceError

OP_N, OP_T = 0, 1
TF32_TENSOR_OP_MATH = 3  # cublasMath_t CUBLAS_TF32_TENSOR_OP_MATH
_LOCK = threading.Lock()  # one handle per executor: its stream is set per call


def _cublas():
    from cupy_backends.cuda.libs import cublas

    return cublas


def _ptr(x) -> int:
    return x.data.ptr


def handle(ex) -> int:
    """The executor's TF32 cuBLAS handle, created on first use (on its device)."""
    h = ex._cublas.get("tf32")
    if h is None:
        lib = _cublas()
        h = lib.create()
        lib.setMathMode(h, TF32_TENSOR_OP_MATH)
        ex._cublas["tf32"] = h
    return h


def _operand(xp, x, batch):
    """(array, transposed, ld, batch stride) of a (..., R, C) float32 operand read in place
    by cuBLAS; a C-order copy when neither of its last two axes has unit stride."""
    x = xp.broadcast_to(x, batch + x.shape[-2:])
    r, c = x.shape[-2:]
    item = x.itemsize
    sr, sc = x.strides[-2] // item, x.strides[-1] // item
    bstrides = [s // item for s, n in zip(x.strides[:-2], x.shape[:-2]) if n > 1]
    # The batch axes must collapse to one stride (or broadcast: stride 0).
    nb = int(np.prod(batch, dtype=np.int64)) if batch else 1
    ok = len(set(bstrides)) <= 1 and all(s >= 0 for s in bstrides)
    if ok and len([n for n in batch if n > 1]) > 1:  # several batch axes: they must be nested
        ok = False
    bstride = bstrides[0] if bstrides else 0
    if ok and (sc == 1 or c == 1) and sr >= 0:
        return x, False, max(sr, c, 1), bstride, nb
    if ok and (sr == 1 or r == 1) and sc >= 0:
        return x, True, max(sc, r, 1), bstride, nb
    x = xp.ascontiguousarray(x).reshape((nb, r, c))
    return x, False, max(c, 1), r * c, nb


def matmul(ex, a, b, out=None):
    """a @ b (float32, NumPy's broadcasting of batch axes) on the executor's TF32 handle,
    into `out` (C-contiguous float32) when given."""
    xp = ex.xp
    if a.dtype != np.float32 or b.dtype != np.float32 or a.ndim < 2 or b.ndim < 2:
        return xp.matmul(a, b, out=out)  # only float32 products have a TF32 mode
    m, k = a.shape[-2:]
    k2, n = b.shape[-2:]
    if k != k2:
        raise DeviceError(f"matmul: inner dimensions differ, a {tuple(a.shape)} and b {tuple(b.shape)}")
    batch = tuple(np.broadcast_shapes(a.shape[:-2], b.shape[:-2]))
    if out is None:
        out = xp.empty(batch + (m, n), np.float32)
    elif out.shape != batch + (m, n) or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise DeviceError(f"matmul: `out` must be C-contiguous float32 {batch + (m, n)}, got "
                          f"{tuple(out.shape)} {out.dtype}")
    if out.size == 0:
        return out
    if k == 0:
        out[...] = 0
        return out
    a_, ta, lda, sa, nb = _operand(xp, a, batch)
    b_, tb, ldb, sb, _ = _operand(xp, b, batch)
    lib = _cublas()
    with _LOCK:
        h = handle(ex)
        lib.setStream(h, xp.cuda.get_current_stream().ptr)
        # column-major: out^T (n x m) = op(b) (n x k) . op(a) (k x m)
        lib.sgemmStridedBatched(h, OP_T if tb else OP_N, OP_T if ta else OP_N, n, m, k, 1.0,
                                _ptr(b_), ldb, sb, _ptr(a_), lda, sa, 0.0, _ptr(out), n, m * n, nb)
    return out
