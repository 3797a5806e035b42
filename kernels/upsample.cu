// Upsampling, NHWC (cvflow/ops/upsample.py). One output element per thread.
// T: float, or kernels/dtype.h's half storage (<name>_f16 / <name>_bf16). Convex
// upsampling reads its mask logits (a layer's output) in T but keeps the flow and its
// upsampled output float32 (flow fields are never stored in half: the result is the
// user's flow); the softmax and the mix are float. Bilinear resizing reads and writes T
// (a feature map or an image; a flow is resized in float32), with float32 tables.

// Convex upsampling (RAFT, GMFlow): out[n, f*y + i, f*x + j, c] = sum_k w_k * f * flow[n, y + ky - 1,
// x + kx - 1, c] (zero outside), k = 3*ky + kx, w = softmax over k of
// mask[n, y, x, k*f*f + i*f + j]. flow (N, H, W, C), mask (N, H, W, 9*f*f), out (N, f*H, f*W, C).
template <typename T>
__device__ __forceinline__ void convex_upsample_t(const float* __restrict__ flow, const T* __restrict__ mask,
                                                  float* __restrict__ out, int N, int H, int W, int C, int f)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int Wo = W * f, Ho = H * f;
    if (i >= N * Ho * Wo * C) return;
    int c = i % C;
    int q = i / C;
    int X = q % Wo;
    q /= Wo;
    int Y = q % Ho, n = q / Ho;
    int y = Y / f, x = X / f, sub = (Y % f) * f + X % f;
    int f2 = f * f;
    const T* m = mask + (((long long)n * H + y) * W + x) * 9 * f2 + sub;
    float mx = cvf_f32(m[0]);
    for (int k = 1; k < 9; ++k) mx = fmaxf(mx, cvf_f32(m[k * f2]));
    float e[9];
    float s = 0.0f;
    for (int k = 0; k < 9; ++k) {
        e[k] = expf(__fsub_rn(cvf_f32(m[k * f2]), mx));
        s = __fadd_rn(s, e[k]);
    }
    float scale = (float)f, acc = 0.0f;
    for (int k = 0; k < 9; ++k) {
        int yy = y + k / 3 - 1, xx = x + k % 3 - 1;
        if (yy < 0 || yy >= H || xx < 0 || xx >= W) continue;
        float v = __fmul_rn(flow[(((long long)n * H + yy) * W + xx) * C + c], scale);
        acc = __fadd_rn(acc, __fmul_rn(__fdiv_rn(e[k], s), v));
    }
    out[i] = acc;
}

// Bilinear resize with per-axis tables of the two source indices and their weights
// (ytab_i/ytab_w: (Ho, 2), xtab_*: (Wo, 2), the interpolation matrices' non-zeros):
// rows first, then columns, as the NumPy op's two matrix products.
template <typename T>
__device__ __forceinline__ void resize_bilinear_t(const T* __restrict__ x, T* __restrict__ out,
                                                  const int* __restrict__ ytab_i, const float* __restrict__ ytab_w,
                                                  const int* __restrict__ xtab_i, const float* __restrict__ xtab_w,
                                                  int N, int H, int W, int C, int Ho, int Wo)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N * Ho * Wo * C) return;
    int c = i % C;
    int q = i / C;
    int X = q % Wo;
    q /= Wo;
    int Y = q % Ho, n = q / Ho;
    const T* r0 = x + ((long long)n * H + ytab_i[2 * Y]) * W * C + c;
    const T* r1 = x + ((long long)n * H + ytab_i[2 * Y + 1]) * W * C + c;
    float wy0 = ytab_w[2 * Y], wy1 = ytab_w[2 * Y + 1];
    float acc = 0.0f;
    for (int t = 0; t < 2; ++t) {
        long long col = (long long)xtab_i[2 * X + t] * C;
        float v = __fadd_rn(__fmul_rn(wy0, cvf_f32(r0[col])), __fmul_rn(wy1, cvf_f32(r1[col])));
        acc = __fadd_rn(acc, __fmul_rn(xtab_w[2 * X + t], v));
    }
    out[i] = cvf_from_f32<T>(acc);
}

extern "C" __global__ void convex_upsample(const float* __restrict__ flow, const float* __restrict__ mask,
                                           float* __restrict__ out, int N, int H, int W, int C, int f)
{
    convex_upsample_t(flow, mask, out, N, H, W, C, f);
}

extern "C" __global__ void convex_upsample_f16(const float* __restrict__ flow, const cvf_f16* __restrict__ mask,
                                               float* __restrict__ out, int N, int H, int W, int C, int f)
{
    convex_upsample_t(flow, mask, out, N, H, W, C, f);
}

extern "C" __global__ void convex_upsample_bf16(const float* __restrict__ flow, const cvf_bf16* __restrict__ mask,
                                                float* __restrict__ out, int N, int H, int W, int C, int f)
{
    convex_upsample_t(flow, mask, out, N, H, W, C, f);
}

extern "C" __global__ void resize_bilinear(const float* __restrict__ x, float* __restrict__ out,
                                           const int* __restrict__ ytab_i, const float* __restrict__ ytab_w,
                                           const int* __restrict__ xtab_i, const float* __restrict__ xtab_w, int N,
                                           int H, int W, int C, int Ho, int Wo)
{
    resize_bilinear_t(x, out, ytab_i, ytab_w, xtab_i, xtab_w, N, H, W, C, Ho, Wo);
}

extern "C" __global__ void resize_bilinear_f16(const cvf_f16* __restrict__ x, cvf_f16* __restrict__ out,
                                               const int* __restrict__ ytab_i, const float* __restrict__ ytab_w,
                                               const int* __restrict__ xtab_i, const float* __restrict__ xtab_w,
                                               int N, int H, int W, int C, int Ho, int Wo)
{
    resize_bilinear_t(x, out, ytab_i, ytab_w, xtab_i, xtab_w, N, H, W, C, Ho, Wo);
}

extern "C" __global__ void resize_bilinear_bf16(const cvf_bf16* __restrict__ x, cvf_bf16* __restrict__ out,
                                                const int* __restrict__ ytab_i, const float* __restrict__ ytab_w,
                                                const int* __restrict__ xtab_i, const float* __restrict__ xtab_w,
                                                int N, int H, int W, int C, int Ho, int Wo)
{
    resize_bilinear_t(x, out, ytab_i, ytab_w, xtab_i, xtab_w, N, H, W, C, Ho, Wo);
}
