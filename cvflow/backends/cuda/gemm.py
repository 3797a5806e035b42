"""TF32 and half products on CuPy: the executor's own cuBLAS handles.

Half storage (issue 20: float16, or uint16 holding bfloat16 bits, which CuPy cannot
multiply) goes to `cublasGemmEx` with fp32 compute (CUBLAS_COMPUTE_32F: exact products,
fp32 accumulation, one rounding to the output's type), one call per batch entry.

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
R_16F, R_16BF = 2, 14    # cudaDataType_t CUDA_R_16F, CUDA_R_16BF
COMPUTE_32F = 68         # cublasComputeType_t CUBLAS_COMPUTE_32F
GEMM_DEFAULT = -1        # cublasGemmAlgo_t CUBLAS_GEMM_DEFAULT
_HALF = {np.dtype(np.float16): R_16F, np.dtype(np.uint16): R_16BF}
_ONE, _ZERO = np.ones(1, np.float32), np.zeros(1, np.float32)  # host alpha, beta of GemmEx
_LOCK = threading.Lock()  # one handle per executor: its stream is set per call


def _cublas():
    from cupy_backends.cuda.libs import cublas

    return cublas


def _ptr(x) -> int:
    return x.data.ptr


def handle(ex, mode="tf32") -> int:
    """The executor's cuBLAS handle of `mode` ("tf32": TF32 tensor-op math; "half": the
    default math), created on first use (on its device)."""
    h = ex._cublas.get(mode)
    if h is None:
        lib = _cublas()
        h = lib.create()
        if mode == "tf32":
            lib.setMathMode(h, TF32_TENSOR_OP_MATH)
        ex._cublas[mode] = h
    return h


def _operand(xp, x, batch):
    """(array, transposed, ld, batch stride) of a (..., R, C) float32 operand read in place
    by cuBLAS; a C-order copy when neither of its last two axes has unit stride."""
    x = xp.broadcast_to(x, batch + x.shape[-2:])
    r, c = x.shape[-2:]
    dtype = x.dtype
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
    x = xp.ascontiguousarray(x, dtype=dtype).reshape((nb, r, c))
    return x, False, max(c, 1), r * c, nb


def matmul(ex, a, b, out=None):
    """a @ b with NumPy's broadcasting of batch axes, into `out` (C-contiguous, a's dtype)
    when given: float32 on the executor's TF32 handle; half storage (float16 / bfloat16
    bits, both operands alike) by GemmEx with fp32 compute."""
    xp = ex.xp
    half = _HALF.get(np.dtype(a.dtype))
    if a.ndim < 2 or b.ndim < 2 or b.dtype != a.dtype or (half is None and a.dtype != np.float32):
        if half is not None or b.dtype in _HALF:
            raise DeviceError(f"matmul's operands must share one storage type, got {a.dtype} and {b.dtype}")
        return xp.matmul(a, b, out=out)  # only float32 has a TF32 mode
    m, k = a.shape[-2:]
    k2, n = b.shape[-2:]
    if k != k2:
        raise DeviceError(f"matmul: inner dimensions differ, a {tuple(a.shape)} and b {tuple(b.shape)}")
    batch = tuple(np.broadcast_shapes(a.shape[:-2], b.shape[:-2]))
    if out is None:
        out = xp.empty(batch + (m, n), a.dtype)
    elif out.shape != batch + (m, n) or out.dtype != a.dtype or not out.flags.c_contiguous:
        raise DeviceError(f"matmul: `out` must be C-contiguous {np.dtype(a.dtype).name} {batch + (m, n)}, got "
                          f"{tuple(out.shape)} {out.dtype}")
    if out.size == 0:
        return out
    if k == 0:
        out[...] = 0
        return out
    a_, ta, lda, sa, nb = _operand(xp, a, batch)
    b_, tb, ldb, sb, _ = _operand(xp, b, batch)
    lib = _cublas()
    opa, opb = OP_T if ta else OP_N, OP_T if tb else OP_N
    with _LOCK:
        h = handle(ex, "tf32" if half is None else "half")
        lib.setStream(h, xp.cuda.get_current_stream().ptr)
        # column-major: out^T (n x m) = op(b) (n x k) . op(a) (k x m)
        if half is None:
            lib.sgemmStridedBatched(h, opb, opa, n, m, k, 1.0, _ptr(b_), ldb, sb, _ptr(a_), lda, sa, 0.0,
                                    _ptr(out), n, m * n, nb)
        else:
            size = np.dtype(a.dtype).itemsize
            for i in range(nb):
                lib.gemmEx(h, opb, opa, n, m, k, _ONE.ctypes.data, _ptr(b_) + i * sb * size, half, ldb,
                           _ptr(a_) + i * sa * size, half, lda, _ZERO.ctypes.data,
                           _ptr(out) + i * m * n * size, half, n, COMPUTE_32F, GEMM_DEFAULT)
    return out
