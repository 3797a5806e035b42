// 2x2 average pooling, stride 2, NHWC; odd trailing rows/columns dropped (as PyTorch and
// cvflow/ops/pool.py). One output element per thread. T: float, or kernels/dtype.h's half
// storage (<name>_f16 / <name>_bf16): the four loads are summed in float, rounded once on store.
template <typename T>
__device__ __forceinline__ void avg_pool2x2_t(const T* __restrict__ x, T* __restrict__ out, int N, int H, int W,
                                              int C)
{
    int H2 = H / 2, W2 = W / 2;
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N * H2 * W2 * C) return;
    int c = i % C;
    int q = i / C;
    int ox = q % W2;
    q /= W2;
    int oy = q % H2, n = q / H2;
    long long row = (long long)W * C;
    const T* p = x + (((long long)n * H + 2 * oy) * W + 2 * ox) * C + c;
    float s = __fadd_rn(__fadd_rn(__fadd_rn(cvf_f32(p[0]), cvf_f32(p[C])), cvf_f32(p[row])), cvf_f32(p[row + C]));
    out[i] = cvf_from_f32<T>(__fmul_rn(s, 0.25f));
}

extern "C" __global__ void avg_pool2x2(const float* __restrict__ x, float* __restrict__ out,
                                       int N, int H, int W, int C)
{
    avg_pool2x2_t(x, out, N, H, W, C);
}

extern "C" __global__ void avg_pool2x2_f16(const cvf_f16* __restrict__ x, cvf_f16* __restrict__ out,
                                           int N, int H, int W, int C)
{
    avg_pool2x2_t(x, out, N, H, W, C);
}

extern "C" __global__ void avg_pool2x2_bf16(const cvf_bf16* __restrict__ x, cvf_bf16* __restrict__ out,
                                            int N, int H, int W, int C)
{
    avg_pool2x2_t(x, out, N, H, W, C);
}
