// CPU emulation shim for cvflow's CUDA kernels (tests only; see cvflow/backends/cuda/emulator.py).
//
// The emulator compiles each kernels/*.cu with g++ after this header: CUDA's qualifiers
// vanish, threadIdx/blockIdx/blockDim/gridDim become thread-local variables that the
// generated launcher sets while it loops over the grid and the block (cvf_run below),
// one CUDA thread after another; large grids are split into runs of whole blocks, one
// OS thread per run. That is exact for kernels whose blocks share nothing and whose
// threads each write their own elements (every cvflow kernel). __shared__ and
// __syncthreads are deliberately not provided, so a kernel that needs them fails to
// build here instead of being emulated wrongly.
#pragma once

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

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

// Half precision (kernels/dtype.h's storage types hold the bits): binary16 through g++'s
// _Float16, whose conversions round to nearest even as the device's cvt.rn.f16.f32 (and
// keep subnormals, as the device does without -ftz); bfloat16 by hand: the top 16 bits
// of the float, rounded to nearest even (cvt.rn.bf16.f32), NaN kept quiet.
#define CVFLOW_EMULATOR 1
inline unsigned short cvf_f32_to_f16(float f) {
    _Float16 h = (_Float16)f;
    unsigned short b;
    std::memcpy(&b, &h, sizeof b);
    return b;
}
inline float cvf_f16_to_f32(unsigned short b) {
    _Float16 h;
    std::memcpy(&h, &b, sizeof h);
    return (float)h;
}
inline unsigned short cvf_f32_to_bf16(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);  // NaN: quiet
    u += 0x7fffu + ((u >> 16) & 1u);
    return (unsigned short)(u >> 16);
}
inline float cvf_bf16_to_f32(unsigned short b) {
    uint32_t u = (uint32_t)b << 16;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

template <typename T>
inline T atomicAdd(T* address, T value) {
    return std::atomic_ref<T>(*address).fetch_add(value);
}

// Run body() once per CUDA thread of the grid d = (grid x, y, z, block x, y, z), blocks in
// CUDA's linear order (x fastest), split into `nthreads` contiguous runs of blocks.
template <typename F>
static void cvf_run(const unsigned* d, int nthreads, F body) {
    unsigned long long nblocks = (unsigned long long)d[0] * d[1] * d[2];
    auto work = [d, &body](unsigned long long b0, unsigned long long b1) {
        gridDim.x = d[0]; gridDim.y = d[1]; gridDim.z = d[2];
        blockDim.x = d[3]; blockDim.y = d[4]; blockDim.z = d[5];
        for (unsigned long long b = b0; b < b1; ++b) {
            blockIdx.x = (unsigned)(b % d[0]);
            blockIdx.y = (unsigned)(b / d[0] % d[1]);
            blockIdx.z = (unsigned)(b / ((unsigned long long)d[0] * d[1]));
            for (unsigned tz = 0; tz < d[5]; ++tz)
                for (unsigned ty = 0; ty < d[4]; ++ty)
                    for (unsigned tx = 0; tx < d[3]; ++tx) {
                        threadIdx.x = tx; threadIdx.y = ty; threadIdx.z = tz;
                        body();
                    }
        }
    };
    unsigned long long runs = nthreads > 1 ? (unsigned long long)nthreads : 1;
    if (runs > nblocks) runs = nblocks ? nblocks : 1;
    unsigned long long step = (nblocks + runs - 1) / runs;
    std::vector<std::thread> pool;
    for (unsigned long long lo = step; lo < nblocks; lo += step)
        pool.emplace_back(work, lo, lo + step < nblocks ? lo + step : nblocks);
    work(0, step < nblocks ? step : nblocks);
    for (auto& t : pool) t.join();
}
