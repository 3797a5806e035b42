// Nearest-neighbour upsampling by an integer factor, NHWC (cvflow/ops/upsample.py
// upsample_nearest), one output element per thread.
extern "C" __global__ void upsample_nearest(const float* __restrict__ a, float* __restrict__ out, int N, int H,
                                            int W, int C, int f)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int Wo = W * f, Ho = H * f;
    if (i >= N * Ho * Wo * C) return;
    int c = i % C, x = (i / C) % Wo, y = (i / (C * Wo)) % Ho, n = i / (C * Wo * Ho);
    out[i] = a[(((long long)n * H + y / f) * W + x / f) * C + c];
}
