// 2x2 average pooling, stride 2, NHWC; odd trailing rows/columns dropped (as PyTorch and
// cvflow/ops/pool.py). One output element per thread.
extern "C" __global__ void avg_pool2x2(const float* __restrict__ x, float* __restrict__ out,
                                       int N, int H, int W, int C)
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
    const float* p = x + (((long long)n * H + 2 * oy) * W + 2 * ox) * C + c;
    float s = __fadd_rn(__fadd_rn(__fadd_rn(p[0], p[C]), p[row]), p[row + C]);
    out[i] = __fmul_rn(s, 0.25f);
}
