// Normalisation layers, NHWC (cvflow/ops/norm.py). No shared memory: instance norm's
// statistics are per-chunk partial sums (one thread per sample, chunk and channel),
// then one thread per sample and channel adds the chunks in order.
// Activations are typed (T: float, or kernels/dtype.h's half storage: entry points
// <name>_f16 / <name>_bf16); statistics and affine parameters stay float, and every
// sum, centring and product is float/double arithmetic on the loaded values.

// partial[(n*chunks + k)*C + c] = sum over pixels m of chunk k of v, in double, where
// v = x[n, m, c] (pass 0) or (x - mean[n, c])^2 rounded to float (pass 1), as the
// NumPy op (float32 centring and square, float64 sums).
template <typename T>
__device__ __forceinline__ void inorm_partial_t(const T* __restrict__ x, const float* __restrict__ mean,
                                                double* __restrict__ partial, int N, int M, int C,
                                                int chunk, int chunks, int pass)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N * chunks * C) return;
    int c = i % C;
    int t = i / C;
    int k = t % chunks, n = t / chunks;
    int m0 = k * chunk;
    int m1 = min(M, m0 + chunk);
    const T* px = x + (long long)n * M * C + c;
    float mu = pass ? mean[n * C + c] : 0.0f;
    double s = 0.0;
    for (int m = m0; m < m1; ++m) {
        float v = cvf_f32(px[(long long)m * C]);
        if (pass) {
            float d = __fsub_rn(v, mu);
            v = __fmul_rn(d, d);
        }
        s += (double)v;
    }
    partial[i] = s;
}

extern "C" __global__ void inorm_partial(const float* __restrict__ x, const float* __restrict__ mean,
                                         double* __restrict__ partial, int N, int M, int C,
                                         int chunk, int chunks, int pass)
{
    inorm_partial_t(x, mean, partial, N, M, C, chunk, chunks, pass);
}

extern "C" __global__ void inorm_partial_f16(const cvf_f16* __restrict__ x, const float* __restrict__ mean,
                                             double* __restrict__ partial, int N, int M, int C,
                                             int chunk, int chunks, int pass)
{
    inorm_partial_t(x, mean, partial, N, M, C, chunk, chunks, pass);
}

extern "C" __global__ void inorm_partial_bf16(const cvf_bf16* __restrict__ x, const float* __restrict__ mean,
                                              double* __restrict__ partial, int N, int M, int C,
                                              int chunk, int chunks, int pass)
{
    inorm_partial_t(x, mean, partial, N, M, C, chunk, chunks, pass);
}

// pass 0: mean[n, c] = float(sum / M); pass 1: alpha[n, c] = float(1 / sqrt(sum / M + eps)).
extern "C" __global__ void inorm_stats(const double* __restrict__ partial, float* __restrict__ mean,
                                       float* __restrict__ alpha, int N, int M, int C, int chunks,
                                       int pass, double eps)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N * C) return;
    int c = i % C, n = i / C;
    double s = 0.0;
    for (int k = 0; k < chunks; ++k) s += partial[((long long)n * chunks + k) * C + c];
    if (pass == 0) mean[i] = (float)(s / M);
    else alpha[i] = (float)(1.0 / sqrt(s / M + eps));
}

// out = (x - mean) * alpha (then ReLU if relu); out may be x.
template <typename T>
__device__ __forceinline__ void inorm_apply_t(const T* x, const float* __restrict__ mean,
                                              const float* __restrict__ alpha, T* out, int N, int M, int C,
                                              int relu)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N * M * C) return;
    int c = i % C, n = i / (M * C);
    float v = __fmul_rn(__fsub_rn(cvf_f32(x[i]), mean[n * C + c]), alpha[n * C + c]);
    out[i] = cvf_from_f32<T>(relu && !(v > 0.0f) ? 0.0f : v);
}

extern "C" __global__ void inorm_apply(const float* x, const float* __restrict__ mean,
                                       const float* __restrict__ alpha, float* out,
                                       int N, int M, int C, int relu)
{
    inorm_apply_t(x, mean, alpha, out, N, M, C, relu);
}

extern "C" __global__ void inorm_apply_f16(const cvf_f16* x, const float* __restrict__ mean,
                                           const float* __restrict__ alpha, cvf_f16* out,
                                           int N, int M, int C, int relu)
{
    inorm_apply_t(x, mean, alpha, out, N, M, C, relu);
}

extern "C" __global__ void inorm_apply_bf16(const cvf_bf16* x, const float* __restrict__ mean,
                                            const float* __restrict__ alpha, cvf_bf16* out,
                                            int N, int M, int C, int relu)
{
    inorm_apply_t(x, mean, alpha, out, N, M, C, relu);
}

// Inference batch norm in place: x = x*scale + shift (rounded twice, as NumPy), ReLU if relu.
template <typename T>
__device__ __forceinline__ void scale_shift_t(T* __restrict__ x, const float* __restrict__ scale,
                                              const float* __restrict__ shift, int total, int C, int relu)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    int c = i % C;
    float v = __fadd_rn(__fmul_rn(cvf_f32(x[i]), scale[c]), shift[c]);
    x[i] = cvf_from_f32<T>(relu && !(v > 0.0f) ? 0.0f : v);
}

extern "C" __global__ void scale_shift(float* __restrict__ x, const float* __restrict__ scale,
                                       const float* __restrict__ shift, int total, int C, int relu)
{
    scale_shift_t(x, scale, shift, total, C, relu);
}

extern "C" __global__ void scale_shift_f16(cvf_f16* __restrict__ x, const float* __restrict__ scale,
                                           const float* __restrict__ shift, int total, int C, int relu)
{
    scale_shift_t(x, scale, shift, total, C, relu);
}

extern "C" __global__ void scale_shift_bf16(cvf_bf16* __restrict__ x, const float* __restrict__ scale,
                                            const float* __restrict__ shift, int total, int C, int relu)
{
    scale_shift_t(x, scale, shift, total, C, relu);
}

// FlowNet2's ChannelNorm: out[p] = sqrt(sum_c x[p, c]^2), one pixel per thread.
template <typename T>
__device__ __forceinline__ void channel_norm_t(const T* __restrict__ x, T* __restrict__ out, int P, int C)
{
    int p = blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= P) return;
    const T* px = x + (long long)p * C;
    float s = 0.0f;
    for (int c = 0; c < C; ++c) {
        float v = cvf_f32(px[c]);
        s = __fadd_rn(s, __fmul_rn(v, v));
    }
    out[p] = cvf_from_f32<T>(sqrtf(s));
}

extern "C" __global__ void channel_norm(const float* __restrict__ x, float* __restrict__ out, int P, int C)
{
    channel_norm_t(x, out, P, C);
}

extern "C" __global__ void channel_norm_f16(const cvf_f16* __restrict__ x, cvf_f16* __restrict__ out, int P, int C)
{
    channel_norm_t(x, out, P, C);
}

extern "C" __global__ void channel_norm_bf16(const cvf_bf16* __restrict__ x, cvf_bf16* __restrict__ out, int P,
                                             int C)
{
    channel_norm_t(x, out, P, C);
}

// FlowNet2's brightness error: out[p] = sqrt(sum_c (a[p, c] - b[p, c])^2), the difference
// and its square rounded to float as the NumPy op (channel_norm(a - b)). a and b may be
// channel slices of wider maps: pixel p of a starts at a[p*Sa + Oa] (of b: b[p*Sb + Ob]).
// Typed: a and b in half, the differences and the sum in float, the norm stored in half
// (an activation, as channel_norm's).
template <typename T>
__device__ __forceinline__ void channel_norm_diff_t(const T* __restrict__ a, const T* __restrict__ b,
                                                    T* __restrict__ out, int P, int C, int Sa, int Oa, int Sb,
                                                    int Ob)
{
    int p = blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= P) return;
    const T* pa = a + (long long)p * Sa + Oa;
    const T* pb = b + (long long)p * Sb + Ob;
    float s = 0.0f;
    for (int c = 0; c < C; ++c) {
        float d = __fsub_rn(cvf_f32(pa[c]), cvf_f32(pb[c]));
        s = __fadd_rn(s, __fmul_rn(d, d));
    }
    out[p] = cvf_from_f32<T>(sqrtf(s));
}

extern "C" __global__ void channel_norm_diff(const float* __restrict__ a, const float* __restrict__ b,
                                             float* __restrict__ out, int P, int C, int Sa, int Oa, int Sb,
                                             int Ob)
{
    channel_norm_diff_t(a, b, out, P, C, Sa, Oa, Sb, Ob);
}

extern "C" __global__ void channel_norm_diff_f16(const cvf_f16* __restrict__ a, const cvf_f16* __restrict__ b,
                                                 cvf_f16* __restrict__ out, int P, int C, int Sa, int Oa, int Sb,
                                                 int Ob)
{
    channel_norm_diff_t(a, b, out, P, C, Sa, Oa, Sb, Ob);
}

extern "C" __global__ void channel_norm_diff_bf16(const cvf_bf16* __restrict__ a, const cvf_bf16* __restrict__ b,
                                                  cvf_bf16* __restrict__ out, int P, int C, int Sa, int Oa,
                                                  int Sb, int Ob)
{
    channel_norm_diff_t(a, b, out, P, C, Sa, Oa, Sb, Ob);
}
