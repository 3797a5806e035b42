// LayerNorm over the last (channel) axis of a row-major (P, C) array, with affine weight
// and bias (cvflow/ops/norm.py layer_norm; SEA-RAFT's and GMFlow's channels-last norm).
// One row per thread: the mean and the variance of the float-centred values are summed
// in double and rounded to float, as the NumPy op's float32 statistics within rounding.
// T: float, or kernels/dtype.h's half storage (<name>_f16 / <name>_bf16) for x, weight,
// bias and out; the statistics and the affine arithmetic stay float.
template <typename T>
__device__ __forceinline__ void layer_norm_last_t(const T* __restrict__ x, const T* __restrict__ weight,
                                                  const T* __restrict__ bias, T* __restrict__ out, int P, int C,
                                                  float eps)
{
    int p = blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= P) return;
    const T* row = x + (long long)p * C;
    T* dst = out + (long long)p * C;
    double s = 0.0;
    for (int c = 0; c < C; ++c) s += (double)cvf_f32(row[c]);
    float mean = (float)(s / C);
    double q = 0.0;
    for (int c = 0; c < C; ++c) {
        float d = __fsub_rn(cvf_f32(row[c]), mean);
        q += (double)__fmul_rn(d, d);
    }
    float sd = sqrtf(__fadd_rn((float)(q / C), eps));
    for (int c = 0; c < C; ++c) {
        float v = __fmul_rn(__fdiv_rn(__fsub_rn(cvf_f32(row[c]), mean), sd), cvf_f32(weight[c]));
        dst[c] = cvf_from_f32<T>(__fadd_rn(v, cvf_f32(bias[c])));
    }
}

extern "C" __global__ void layer_norm_last(const float* __restrict__ x, const float* __restrict__ weight,
                                           const float* __restrict__ bias, float* __restrict__ out,
                                           int P, int C, float eps)
{
    layer_norm_last_t(x, weight, bias, out, P, C, eps);
}

extern "C" __global__ void layer_norm_last_f16(const cvf_f16* __restrict__ x, const cvf_f16* __restrict__ weight,
                                               const cvf_f16* __restrict__ bias, cvf_f16* __restrict__ out,
                                               int P, int C, float eps)
{
    layer_norm_last_t(x, weight, bias, out, P, C, eps);
}

extern "C" __global__ void layer_norm_last_bf16(const cvf_bf16* __restrict__ x, const cvf_bf16* __restrict__ weight,
                                                const cvf_bf16* __restrict__ bias, cvf_bf16* __restrict__ out,
                                                int P, int C, float eps)
{
    layer_norm_last_t(x, weight, bias, out, P, C, eps);
}
