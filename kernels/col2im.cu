// col2im (gather form, no atomics) for transposed convolutions (cvflow/ops/conv_transpose.py).
// taps (N*H*W, kh, kw, O): every tap's contribution of every input pixel (one matrix
// product). Output (n, Y, X, o) sums taps[n, yi, xi, i, j, o] over Y = yi*sh + i - ph,
// X = xi*sw + j - pw, in the NumPy op's order (i, then j); the bias is added before
// (bias_mode 1) or after (bias_mode 2) the taps, as that op does for O >= 32 / O < 32.
// act: 0 none, 1 ReLU, 2 LeakyReLU(slope). One output element per thread.
// T: float, or kernels/dtype.h's half storage (<name>_f16 / <name>_bf16) for taps, bias
// and out; the sum accumulates in float, rounded once on store.
template <typename T>
__device__ __forceinline__ void col2im_t(const T* __restrict__ taps, const T* __restrict__ bias, T* __restrict__ out,
                                         int N, int H, int W, int O, int Ho, int Wo, int kh, int kw, int sh, int sw,
                                         int ph, int pw, int bias_mode, int act, float slope)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N * Ho * Wo * O) return;
    int o = i % O;
    int q = i / O;
    int X = q % Wo;
    q /= Wo;
    int Y = q % Ho, n = q / Ho;
    float acc = bias_mode == 1 ? cvf_f32(bias[o]) : 0.0f;
    for (int ti = 0; ti < kh; ++ti) {
        int ty = Y + ph - ti;
        if (ty < 0 || ty % sh != 0 || ty / sh >= H) continue;
        long long row = ((long long)n * H + ty / sh) * W;
        for (int tj = 0; tj < kw; ++tj) {
            int tx = X + pw - tj;
            if (tx < 0 || tx % sw != 0 || tx / sw >= W) continue;
            acc = __fadd_rn(acc, cvf_f32(taps[(((row + tx / sw) * kh + ti) * kw + tj) * O + o]));
        }
    }
    if (bias_mode == 2) acc = __fadd_rn(acc, cvf_f32(bias[o]));
    if (act == 1) acc = acc > 0.0f ? acc : 0.0f;
    else if (act == 2) acc = fmaxf(acc, __fmul_rn(acc, slope));
    out[i] = cvf_from_f32<T>(acc);
}

extern "C" __global__ void col2im(const float* __restrict__ taps, const float* __restrict__ bias,
                                  float* __restrict__ out, int N, int H, int W, int O, int Ho, int Wo, int kh, int kw,
                                  int sh, int sw, int ph, int pw, int bias_mode, int act, float slope)
{
    col2im_t(taps, bias, out, N, H, W, O, Ho, Wo, kh, kw, sh, sw, ph, pw, bias_mode, act, slope);
}

extern "C" __global__ void col2im_f16(const cvf_f16* __restrict__ taps, const cvf_f16* __restrict__ bias,
                                      cvf_f16* __restrict__ out, int N, int H, int W, int O, int Ho, int Wo, int kh,
                                      int kw, int sh, int sw, int ph, int pw, int bias_mode, int act, float slope)
{
    col2im_t(taps, bias, out, N, H, W, O, Ho, Wo, kh, kw, sh, sw, ph, pw, bias_mode, act, slope);
}

extern "C" __global__ void col2im_bf16(const cvf_bf16* __restrict__ taps, const cvf_bf16* __restrict__ bias,
                                       cvf_bf16* __restrict__ out, int N, int H, int W, int O, int Ho, int Wo, int kh,
                                       int kw, int sh, int sw, int ph, int pw, int bias_mode, int act, float slope)
{
    col2im_t(taps, bias, out, N, H, W, O, Ho, Wo, kh, kw, sh, sw, ph, pw, bias_mode, act, slope);
}
