// Attention of each pixel over its (2r+1)^2 neighbourhood (cvflow/ops/attention.py
// local_attention): corr (N, H, W, K) are patch_correlation's channel means (times
// `scale` = sqrt(C): 1/sqrt(C) dot products; keys outside the map score 0 and stay in
// the softmax), v (N, H, W, D) values, zero outside the map. One output element per
// thread: out (N, H, W, D) = sum_k softmax(corr * scale)_k * v[neighbour k].
extern "C" __global__ void local_attention(const float* __restrict__ corr, const float* __restrict__ v,
                                           float* __restrict__ out, int N, int H, int W, int D, int radius,
                                           float scale)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N * H * W * D) return;
    int d = i % D, p = i / D;
    int x = p % W, y = (p / W) % H, n = p / (W * H);
    int k = 2 * radius + 1, kk = k * k;
    const float* row = corr + (long long)p * kk;
    float m = __fmul_rn(row[0], scale);
    for (int j = 1; j < kk; ++j) m = fmaxf(m, __fmul_rn(row[j], scale));
    double sum = 0.0, acc = 0.0;
    for (int j = 0; j < kk; ++j) {
        double e = (double)expf(__fsub_rn(__fmul_rn(row[j], scale), m));
        sum += e;
        int yy = y + j / k - radius, xx = x + j % k - radius;
        if (yy >= 0 && yy < H && xx >= 0 && xx < W)
            acc += e * (double)v[(((long long)n * H + yy) * W + xx) * D + d];
    }
    out[i] = (float)(acc / sum);
}
