// hardtanh: out[i] = min(max(a[i], lo), hi), one element per thread (NeuFlow v2's clamped
// iteration context; cvflow/backends/base.py hardtanh). a and out typed alike (T: float,
// or kernels/dtype.h's half storage, clamp_f16 / _bf16); the bounds stay float32 (the
// result is rounded once on store, so a bound between two half values rounds as NumPy's
// clip of the float32 value would).
template <typename T>
__device__ __forceinline__ void clamp_t(const T* __restrict__ a, T* __restrict__ out, int total, float lo, float hi)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    out[i] = cvf_from_f32<T>(fminf(fmaxf(cvf_f32(a[i]), lo), hi));
}

extern "C" __global__ void clamp(const float* __restrict__ a, float* __restrict__ out, int total, float lo,
                                 float hi)
{
    clamp_t(a, out, total, lo, hi);
}

extern "C" __global__ void clamp_f16(const cvf_f16* __restrict__ a, cvf_f16* __restrict__ out, int total,
                                     float lo, float hi)
{
    clamp_t(a, out, total, lo, hi);
}

extern "C" __global__ void clamp_bf16(const cvf_bf16* __restrict__ a, cvf_bf16* __restrict__ out, int total,
                                      float lo, float hi)
{
    clamp_t(a, out, total, lo, hi);
}
