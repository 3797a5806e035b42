// FlowNet's patch correlation, kernel 1, zero padding (cvflow/ops/corr.py):
// out[n, y, x, (j + r)*D + (i + r)] = sum_c f1[n, y, x, c] * f2[n, y + s*j, x + s*i, c] / C,
// D = 2r+1, taps outside f2 reading 0. One output element per thread.
// f1, f2 and out typed alike (T: float, or kernels/dtype.h's half storage,
// patch_correlation_f16 / _bf16); the products and their sum are float, rounded once
// on store.
template <typename T>
__device__ __forceinline__ void patch_correlation_t(const T* __restrict__ f1, const T* __restrict__ f2,
                                                    T* __restrict__ out, int N, int H, int W, int C, int r,
                                                    int stride)
{
    int D = 2 * r + 1;
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N * H * W * D * D) return;
    int ch = i % (D * D);
    int p = i / (D * D);
    int x = p % W;
    int y = (p / W) % H;
    int n = p / (W * H);
    int xx = x + stride * (ch % D - r), yy = y + stride * (ch / D - r);
    float s = 0.0f;
    if (xx >= 0 && xx < W && yy >= 0 && yy < H) {
        const T* a = f1 + (long long)p * C;
        const T* b = f2 + (((long long)n * H + yy) * W + xx) * C;
        for (int c = 0; c < C; ++c) s += cvf_f32(a[c]) * cvf_f32(b[c]);
    }
    out[i] = cvf_from_f32<T>(__fdiv_rn(s, (float)C));
}

extern "C" __global__ void patch_correlation(const float* __restrict__ f1, const float* __restrict__ f2,
                                             float* __restrict__ out, int N, int H, int W, int C,
                                             int r, int stride)
{
    patch_correlation_t(f1, f2, out, N, H, W, C, r, stride);
}

extern "C" __global__ void patch_correlation_f16(const cvf_f16* __restrict__ f1, const cvf_f16* __restrict__ f2,
                                                 cvf_f16* __restrict__ out, int N, int H, int W, int C,
                                                 int r, int stride)
{
    patch_correlation_t(f1, f2, out, N, H, W, C, r, stride);
}

extern "C" __global__ void patch_correlation_bf16(const cvf_bf16* __restrict__ f1, const cvf_bf16* __restrict__ f2,
                                                  cvf_bf16* __restrict__ out, int N, int H, int W, int C,
                                                  int r, int stride)
{
    patch_correlation_t(f1, f2, out, N, H, W, C, r, stride);
}
