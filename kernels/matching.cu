// GMFlow's matching as flow (cvflow/ops/matching.py): per pixel, a softmax over its scores
// with candidate positions, and the expected candidate position minus its own. One pixel
// per thread; sums in double. (A pixel per thread reads its row of scores with a stride of
// `cols` between neighbouring threads, not coalesced; a warp per row needs shuffles the
// emulator does not run. Left as is.)
//
// Scores are typed (T: float, or kernels/dtype.h's half storage: <name>_f16 / _bf16);
// the flow stays float32 in every mode: it is the models' output and the next stage's
// sampling offsets, a sub-pixel quantity that half storage would round to 1/32 px at 64 px.
// The softmax (maximum, exponentials, weighted sums) is float/double.

// Global matching over a block of raw scores q.k (rows of `cols` = h*w candidates): row g
// is pixel row0 + g % block_rows of image g / block_rows; scores are scaled by `scale`
// (1/sqrt(C)). flow (images, h*w, 2) gets (x, y) of the expectation minus the pixel's.
template <typename T>
__device__ __forceinline__ void global_match_flow_t(const T* __restrict__ s, float* __restrict__ flow, int rows,
                                                    int cols, int w, float scale, int block_rows, int row0)
{
    int g = blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= rows) return;
    const T* row = s + (long long)g * cols;
    float m = __fmul_rn(cvf_f32(row[0]), scale);
    for (int c = 1; c < cols; ++c) m = fmaxf(m, __fmul_rn(cvf_f32(row[c]), scale));
    double sum = 0.0, sx = 0.0, sy = 0.0;
    for (int c = 0; c < cols; ++c) {
        double e = (double)expf(__fsub_rn(__fmul_rn(cvf_f32(row[c]), scale), m));
        sum += e;
        sx += e * (double)(c % w);
        sy += e * (double)(c / w);
    }
    int p = row0 + g % block_rows;
    long long o = ((long long)(g / block_rows) * cols + p) * 2;
    flow[o] = __fsub_rn((float)(sx / sum), (float)(p % w));
    flow[o + 1] = __fsub_rn((float)(sy / sum), (float)(p / w));
}

extern "C" __global__ void global_match_flow(const float* __restrict__ s, float* __restrict__ flow, int rows,
                                             int cols, int w, float scale, int block_rows, int row0)
{
    global_match_flow_t(s, flow, rows, cols, w, scale, block_rows, row0);
}

extern "C" __global__ void global_match_flow_f16(const cvf_f16* __restrict__ s, float* __restrict__ flow,
                                                 int rows, int cols, int w, float scale, int block_rows, int row0)
{
    global_match_flow_t(s, flow, rows, cols, w, scale, block_rows, row0);
}

extern "C" __global__ void global_match_flow_bf16(const cvf_bf16* __restrict__ s, float* __restrict__ flow,
                                                  int rows, int cols, int w, float scale, int block_rows, int row0)
{
    global_match_flow_t(s, flow, rows, cols, w, scale, block_rows, row0);
}

// Local matching: corr (N, H, W, K), K = (2r+1)^2, the channel-mean correlations of
// patch_correlation (times `scale` = sqrt(C) they are 1/sqrt(C) dot products); window
// positions outside the map are left out of the softmax. flow (N, H, W, 2): the expected
// offset (dx, dy), offsets dy-major.
template <typename T>
__device__ __forceinline__ void local_match_flow_t(const T* __restrict__ corr, float* __restrict__ flow, int N,
                                                   int H, int W, int radius, float scale)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N * H * W) return;
    int x = i % W, y = (i / W) % H;
    int k = 2 * radius + 1;
    const T* row = corr + (long long)i * k * k;
    float m = 0.0f;
    int first = 1;
    for (int dy = -radius; dy <= radius; ++dy)
        for (int dx = -radius; dx <= radius; ++dx) {
            if (y + dy < 0 || y + dy >= H || x + dx < 0 || x + dx >= W) continue;
            float v = __fmul_rn(cvf_f32(row[(dy + radius) * k + dx + radius]), scale);
            m = first ? v : fmaxf(m, v);
            first = 0;
        }
    double sum = 0.0, sx = 0.0, sy = 0.0;
    for (int dy = -radius; dy <= radius; ++dy)
        for (int dx = -radius; dx <= radius; ++dx) {
            if (y + dy < 0 || y + dy >= H || x + dx < 0 || x + dx >= W) continue;
            float v = __fmul_rn(cvf_f32(row[(dy + radius) * k + dx + radius]), scale);
            double e = (double)expf(__fsub_rn(v, m));
            sum += e;
            sx += e * dx;
            sy += e * dy;
        }
    flow[2 * (long long)i] = (float)(sx / sum);
    flow[2 * (long long)i + 1] = (float)(sy / sum);
}

extern "C" __global__ void local_match_flow(const float* __restrict__ corr, float* __restrict__ flow, int N,
                                            int H, int W, int radius, float scale)
{
    local_match_flow_t(corr, flow, N, H, W, radius, scale);
}

extern "C" __global__ void local_match_flow_f16(const cvf_f16* __restrict__ corr, float* __restrict__ flow, int N,
                                                int H, int W, int radius, float scale)
{
    local_match_flow_t(corr, flow, N, H, W, radius, scale);
}

extern "C" __global__ void local_match_flow_bf16(const cvf_bf16* __restrict__ corr, float* __restrict__ flow,
                                                 int N, int H, int W, int radius, float scale)
{
    local_match_flow_t(corr, flow, N, H, W, radius, scale);
}
