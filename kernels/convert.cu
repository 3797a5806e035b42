// Storage conversion (issue 20): float32 <-> half-precision storage (kernels/dtype.h), one
// element per thread. To half: round to nearest even (the device's cvt.rn); to float: exact.

template <typename S, typename D>
__device__ __forceinline__ void convert_t(const S* __restrict__ x, D* __restrict__ out, int total)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    out[i] = cvf_from_f32<D>(cvf_f32(x[i]));
}

extern "C" __global__ void f32_to_f16(const float* __restrict__ x, cvf_f16* __restrict__ out, int total)
{
    convert_t(x, out, total);
}

extern "C" __global__ void f16_to_f32(const cvf_f16* __restrict__ x, float* __restrict__ out, int total)
{
    convert_t(x, out, total);
}

extern "C" __global__ void f32_to_bf16(const float* __restrict__ x, cvf_bf16* __restrict__ out, int total)
{
    convert_t(x, out, total);
}

extern "C" __global__ void bf16_to_f32(const cvf_bf16* __restrict__ x, float* __restrict__ out, int total)
{
    convert_t(x, out, total);
}
