"""Host-side rounding of the GPU precision modes (issue 20): TF32 operands, bfloat16 bit
patterns, and the products the CPU emulator computes in place of cuBLAS for each mode."""
from __future__ import annotations

import numpy as np

HALF = {np.dtype(np.float16), np.dtype(np.uint16)}  # half storage: binary16, bfloat16 bits


def round_tf32(x: np.ndarray) -> np.ndarray:
    """float32 `x` rounded to TF32 (10 explicit mantissa bits, round to nearest, ties to
    even), as float32: what a tensor core reads of an fp32 operand. Inf and NaN pass;
    values within half a TF32 step of the float32 maximum round to inf, as on the device."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    r = (u + np.uint32(0x0FFF) + ((u >> np.uint32(13)) & np.uint32(1))) & np.uint32(0xFFFFE000)
    finite = (u & np.uint32(0x7F800000)) != np.uint32(0x7F800000)
    return np.where(finite, r, u).view(np.float32)


def bf16_bits(x) -> np.ndarray:
    """float32 -> uint16 bfloat16 bits, rounded to nearest even (NaN kept quiet), as the
    device's cvt.rn.bf16.f32."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    r = ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype(np.uint16)
    nan = (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    return np.where(nan, ((u >> np.uint32(16)) | np.uint32(0x40)).astype(np.uint16), r)


def bf16_float(bits) -> np.ndarray:
    """uint16 bfloat16 bits -> float32 (exact)."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)


def emulated_matmul(a, b, out, math):
    """cuBLAS's product on the emulator: FP32 SGEMM, or under "tf32" the FP32 product of
    operands rounded to TF32 (a tensor core's multiply is exact on 11-bit significands
    and accumulates in fp32). Half storage (float16, or uint16 bfloat16 bits): the fp32
    product of the exact float values (cublasGemmEx, CUBLAS_COMPUTE_32F), rounded once
    to the output's storage type."""
    if a.dtype in (np.float16, np.uint16):
        wide = [x.astype(np.float32) if x.dtype == np.float16 else bf16_float(x) for x in (a, b)]
        res = np.matmul(*wide)
        with np.errstate(over="ignore"):
            out[...] = res.astype(np.float16) if out.dtype == np.float16 else bf16_bits(res)
        return
    if math == "tf32":
        a, b = round_tf32(a), round_tf32(b)
    np.matmul(a, b, out=out)
