// Nearest-neighbour upsampling by an integer factor, NHWC (cvflow/ops/upsample.py
// upsample_nearest), one output element per thread. A pure copy: typed (T: float, or
// kernels/dtype.h's half storage, upsample_nearest_f16 / _bf16), values unchanged.
template <typename T>
__device__ __forceinline__ void upsample_nearest_t(const T* __restrict__ a, T* __restrict__ out, int N, int H,
                                                   int W, int C, int f)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int Wo = W * f, Ho = H * f;
    if (i >= N * Ho * Wo * C) return;
    int c = i % C, x = (i / C) % Wo, y = (i / (C * Wo)) % Ho, n = i / (C * Wo * Ho);
    out[i] = a[(((long long)n * H + y / f) * W + x / f) * C + c];
}

extern "C" __global__ void upsample_nearest(const float* __restrict__ a, float* __restrict__ out, int N, int H,
                                            int W, int C, int f)
{
    upsample_nearest_t(a, out, N, H, W, C, f);
}

extern "C" __global__ void upsample_nearest_f16(const cvf_f16* __restrict__ a, cvf_f16* __restrict__ out, int N,
                                                int H, int W, int C, int f)
{
    upsample_nearest_t(a, out, N, H, W, C, f);
}

extern "C" __global__ void upsample_nearest_bf16(const cvf_bf16* __restrict__ a, cvf_bf16* __restrict__ out, int N,
                                                 int H, int W, int C, int f)
{
    upsample_nearest_t(a, out, N, H, W, C, f);
}
