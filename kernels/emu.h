// CPU emulation shim for cvflow's CUDA kernels (tests only; see cvflow/backends/cuda/emulator.py).
//
// The emulator compiles each kernels/*.cu with g++ after this header: CUDA's qualifiers
// vanish, threadIdx/blockIdx/blockDim/gridDim become thread-local variables that the
// generated launcher sets while it loops over the grid and the block, one CUDA thread
// after another. That is exact for kernels that write one output element per thread
// and share nothing (every cvflow kernel): such kernels cannot race. __shared__ and
// __syncthreads are deliberately not provided, so a kernel that needs them fails to
// build here instead of being emulated wrongly.
#pragma once

#include <atomic>
#include <cmath>
#include <cstdint>

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};
using uint3 = dim3;

static thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __launch_bounds__(...)

// floorf, sqrtf, expf, fmaxf, fminf, fabsf: the C library's (same IEEE results).
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
// Rounded single operations: on the GPU they keep nvcc from contracting a*b+c into one
// fused multiply-add, so that a kernel rounds exactly as the NumPy op it mirrors. x86-64
// g++ without -mfma never contracts, so plain operators are the same thing here.
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }

template <typename T>
inline T atomicAdd(T* address, T value) {
    return std::atomic_ref<T>(*address).fetch_add(value);
}
