// Attention of each pixel over its (2r+1)^2 neighbourhood (cvflow/ops/attention.py
// local_attention): corr (N, H, W, K) are patch_correlation's channel means (times
// `scale` = sqrt(C): 1/sqrt(C) dot products; keys outside the map score 0 and stay in
// the softmax), v (N, H, W, D) values, zero outside the map. One output element per
// thread: out (N, H, W, D) = sum_k softmax(corr * scale)_k * v[neighbour k].
// corr, v and out are typed alike (T: float, or kernels/dtype.h's half storage,
// local_attention_f16 / _bf16); the softmax and the weighted sum are float/double,
// rounded once on store.
template <typename T>
__device__ __forceinline__ void local_attention_t(const T* __restrict__ corr, const T* __restrict__ v,
                                                  T* __restrict__ out, int N, int H, int W, int D, int radius,
                                                  float scale)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N * H * W * D) return;
    int d = i % D, p = i / D;
    int x = p % W, y = (p / W) % H, n = p / (W * H);
    int k = 2 * radius + 1, kk = k * k;
    const T* row = corr + (long long)p * kk;
    float m = __fmul_rn(cvf_f32(row[0]), scale);
    for (int j = 1; j < kk; ++j) m = fmaxf(m, __fmul_rn(cvf_f32(row[j]), scale));
    double sum = 0.0, acc = 0.0;
    for (int j = 0; j < kk; ++j) {
        double e = (double)expf(__fsub_rn(__fmul_rn(cvf_f32(row[j]), scale), m));
        sum += e;
        int yy = y + j / k - radius, xx = x + j % k - radius;
        if (yy >= 0 && yy < H && xx >= 0 && xx < W)
            acc += e * (double)cvf_f32(v[(((long long)n * H + yy) * W + xx) * D + d]);
    }
    out[i] = cvf_from_f32<T>((float)(acc / sum));
}

extern "C" __global__ void local_attention(const float* __restrict__ corr, const float* __restrict__ v,
                                           float* __restrict__ out, int N, int H, int W, int D, int radius,
                                           float scale)
{
    local_attention_t(corr, v, out, N, H, W, D, radius, scale);
}

extern "C" __global__ void local_attention_f16(const cvf_f16* __restrict__ corr, const cvf_f16* __restrict__ v,
                                               cvf_f16* __restrict__ out, int N, int H, int W, int D, int radius,
                                               float scale)
{
    local_attention_t(corr, v, out, N, H, W, D, radius, scale);
}

extern "C" __global__ void local_attention_bf16(const cvf_bf16* __restrict__ corr, const cvf_bf16* __restrict__ v,
                                                cvf_bf16* __restrict__ out, int N, int H, int W, int D, int radius,
                                                float scale)
{
    local_attention_t(corr, v, out, N, H, W, D, radius, scale);
}
