// Storage types of the kernels' typed entry points (issue 20: precision="fp16"/"bf16").
//
// Both executors put this header before every kernels/*.cu (the emulator after emu.h; the
// CuPy executor and the nvcc gate as a prelude), so sources need no #include (NVRTC has
// no system headers, hence no cuda_fp16.h: the conversions are PTX cvt instructions).
// A kernel templated on its storage type T loads with cvf_f32(x[i]), computes in float,
// and stores with cvf_from_f32<T>(v): half storage, fp32 arithmetic. Entry points are
// extern "C" instantiations named <kernel> (float), <kernel>_f16 and <kernel>_bf16.
// Arrays: float16 for cvf_f16; uint16 bit patterns for cvf_bf16 (NumPy has no bfloat16).
#ifndef CVFLOW_DTYPE_H
#define CVFLOW_DTYPE_H

struct cvf_f16 { unsigned short bits; };
struct cvf_bf16 { unsigned short bits; };

#ifndef CVFLOW_EMULATOR
__device__ __forceinline__ unsigned short cvf_f32_to_f16(float f) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}
__device__ __forceinline__ float cvf_f16_to_f32(unsigned short h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
__device__ __forceinline__ unsigned short cvf_f32_to_bf16(float f) {
    unsigned short h;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}
__device__ __forceinline__ float cvf_bf16_to_f32(unsigned short h) { return __int_as_float((int)((unsigned)h << 16)); }
#endif

__device__ __forceinline__ float cvf_f32(float v) { return v; }
__device__ __forceinline__ float cvf_f32(cvf_f16 v) { return cvf_f16_to_f32(v.bits); }
__device__ __forceinline__ float cvf_f32(cvf_bf16 v) { return cvf_bf16_to_f32(v.bits); }

template <typename T> __device__ __forceinline__ T cvf_from_f32(float v);
template <> __device__ __forceinline__ float cvf_from_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ cvf_f16 cvf_from_f32<cvf_f16>(float v) { return {cvf_f32_to_f16(v)}; }
template <> __device__ __forceinline__ cvf_bf16 cvf_from_f32<cvf_bf16>(float v) { return {cvf_f32_to_bf16(v)}; }
#endif
