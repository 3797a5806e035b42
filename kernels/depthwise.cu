// Depthwise 2-D convolution (groups == channels), NHWC, stride 1, zero padding
// (cvflow/ops/depthwise.py): ConvNeXt's 7x7 spatial mixing in SEA-RAFT's update.
// One output element per thread, channel fastest, so neighbouring threads read
// neighbouring channels of one input pixel (coalesced). Taps are accumulated in
// float, row by row, as the NumPy op's shifted sums; the bias is added last.
// T: float, or kernels/dtype.h's half storage (<name>_f16 / <name>_bf16) for x, w, bias
// and out; the accumulation stays float, rounded once on store.

// x (N, H, W, C); w (kh, kw, C), the PyTorch (C, 1, kh, kw) weight transposed so one tap's
// channels are contiguous; bias (C,) when has_bias; out (N, Ho, Wo, C) with
// Ho = H + 2*ph - kh + 1, Wo = W + 2*pw - kw + 1.
template <typename T>
__device__ __forceinline__ void depthwise_conv2d_t(const T* __restrict__ x, const T* __restrict__ w,
                                                   const T* __restrict__ bias, T* __restrict__ out,
                                                   int N, int H, int W, int C, int kh, int kw, int ph, int pw,
                                                   int Ho, int Wo, int has_bias)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N * Ho * Wo * C) return;
    int c = i % C;
    int t = i / C;
    int xo = t % Wo;
    t /= Wo;
    int yo = t % Ho, n = t / Ho;
    const T* xn = x + (long long)n * H * W * C + c;
    float acc = 0.0f;
    for (int a = 0; a < kh; ++a) {
        int y = yo + a - ph;
        if (y < 0 || y >= H) continue;
        for (int b = 0; b < kw; ++b) {
            int xx = xo + b - pw;
            if (xx < 0 || xx >= W) continue;
            acc = __fadd_rn(acc, __fmul_rn(cvf_f32(xn[((long long)y * W + xx) * C]), cvf_f32(w[(a * kw + b) * C + c])));
        }
    }
    out[i] = cvf_from_f32<T>(has_bias ? __fadd_rn(acc, cvf_f32(bias[c])) : acc);
}

extern "C" __global__ void depthwise_conv2d(const float* __restrict__ x, const float* __restrict__ w,
                                            const float* __restrict__ bias, float* __restrict__ out,
                                            int N, int H, int W, int C, int kh, int kw, int ph, int pw,
                                            int Ho, int Wo, int has_bias)
{
    depthwise_conv2d_t(x, w, bias, out, N, H, W, C, kh, kw, ph, pw, Ho, Wo, has_bias);
}

extern "C" __global__ void depthwise_conv2d_f16(const cvf_f16* __restrict__ x, const cvf_f16* __restrict__ w,
                                                const cvf_f16* __restrict__ bias, cvf_f16* __restrict__ out,
                                                int N, int H, int W, int C, int kh, int kw, int ph, int pw,
                                                int Ho, int Wo, int has_bias)
{
    depthwise_conv2d_t(x, w, bias, out, N, H, W, C, kh, kw, ph, pw, Ho, Wo, has_bias);
}

extern "C" __global__ void depthwise_conv2d_bf16(const cvf_bf16* __restrict__ x, const cvf_bf16* __restrict__ w,
                                                 const cvf_bf16* __restrict__ bias, cvf_bf16* __restrict__ out,
                                                 int N, int H, int W, int C, int kh, int kw, int ph, int pw,
                                                 int Ho, int Wo, int has_bias)
{
    depthwise_conv2d_t(x, w, bias, out, N, H, W, C, kh, kw, ph, pw, Ho, Wo, has_bias);
}
