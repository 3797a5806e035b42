// im2col for NHWC convolutions (cvflow/ops/conv.py's weight matrix order).
// Row r of cols is output pixel p = p0 + r (p = (n*Ho + y)*Wo + x); column
// (i*kw + j)*C + c holds x[n, y*sh - ph + i*dh, x*sw - pw + j*dw, c], zero outside.
// One element per thread; a chunk holds rows*kh*kw*C < 2^31 elements.
// T: float, or kernels/dtype.h's half storage (<name>_f16 / <name>_bf16) for the sources,
// their pending biases (weights are stored in half) and the columns: a plain gather moves
// the stored bits; a pending bias/ReLU is applied in float and rounded once on store.

// Column element i of a chunk (K = kh*kw*C columns) -> the flat source pixel
// (n*H + yi)*W + xi and the channel c it gathers; false where it falls in the zero padding.
__device__ __forceinline__ bool im2col_source(int i, int K, int C, int p0, int H, int W, int Ho, int Wo, int kw,
                                              int sh, int sw, int ph, int pw, int dh, int dw, long long* pix,
                                              int* c)
{
    int k = i % K;
    int p = p0 + i / K;
    *c = k % C;
    int tap = k / C;
    int tj = tap % kw, ti = tap / kw;
    int xo = p % Wo;
    int q = p / Wo;
    int yo = q % Ho, n = q / Ho;
    int yi = yo * sh - ph + ti * dh;
    int xi = xo * sw - pw + tj * dw;
    *pix = ((long long)n * H + yi) * W + xi;
    return yi >= 0 && yi < H && xi >= 0 && xi < W;
}

template <typename T>
__device__ __forceinline__ void im2col_t(const T* __restrict__ x, T* __restrict__ cols, int p0, int rows, int H,
                                         int W, int C, int Ho, int Wo, int kh, int kw, int sh, int sw, int ph,
                                         int pw, int dh, int dw)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int K = kh * kw * C;
    if (i >= rows * K) return;
    long long pix;
    int c;
    if (im2col_source(i, K, C, p0, H, W, Ho, Wo, kw, sh, sw, ph, pw, dh, dw, &pix, &c)) cols[i] = x[pix * C + c];
    else cols[i] = cvf_from_f32<T>(0.0f);
}

// im2col of the channel concatenation of up to three sources, each read through a view
// and given its pending bias and activation as it is gathered (the producer's epilogue
// folded into the consumer: no concatenated array, no separate bias/ReLU pass).
// Source s: xs (element offset os, pixel stride ss, channels cs; cs = 0: unused), bs its
// bias (cs,), fs = has_bias | act << 1 (act 1: ReLU). Zero padding stays zero.
// Columns (i*kw + j)*C + c, C = c0 + c1 + c2, as im2col's.
template <typename T>
__device__ __forceinline__ float source_value(const T* __restrict__ x, const T* __restrict__ b, int o, int s, int f,
                                              long long pix, int c)
{
    float v = cvf_f32(x[o + pix * s + c]);
    if (f & 1) v = __fadd_rn(v, cvf_f32(b[c]));
    if ((f >> 1) == 1) v = v > 0.0f ? v : 0.0f;
    return v;
}

template <typename T>
__device__ __forceinline__ void im2col_parts_t(T* __restrict__ cols, int p0, int rows, int H, int W, int Ho, int Wo,
                                               int kh, int kw, int sh, int sw, int ph, int pw, int dh, int dw,
                                               const T* __restrict__ x0, const T* __restrict__ b0, int o0, int s0,
                                               int c0, int f0, const T* __restrict__ x1, const T* __restrict__ b1,
                                               int o1, int s1, int c1, int f1, const T* __restrict__ x2,
                                               const T* __restrict__ b2, int o2, int s2, int c2, int f2)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int C = c0 + c1 + c2;
    int K = kh * kw * C;
    if (i >= rows * K) return;
    long long pix;
    int c;
    float v = 0.0f;
    if (im2col_source(i, K, C, p0, H, W, Ho, Wo, kw, sh, sw, ph, pw, dh, dw, &pix, &c)) {
        if (c < c0) v = source_value(x0, b0, o0, s0, f0, pix, c);
        else if (c < c0 + c1) v = source_value(x1, b1, o1, s1, f1, pix, c - c0);
        else v = source_value(x2, b2, o2, s2, f2, pix, c - c0 - c1);
    }
    cols[i] = cvf_from_f32<T>(v);
}

extern "C" __global__ void im2col(const float* __restrict__ x, float* __restrict__ cols, int p0, int rows, int H,
                                  int W, int C, int Ho, int Wo, int kh, int kw, int sh, int sw, int ph, int pw,
                                  int dh, int dw)
{
    im2col_t(x, cols, p0, rows, H, W, C, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw);
}

extern "C" __global__ void im2col_f16(const cvf_f16* __restrict__ x, cvf_f16* __restrict__ cols, int p0, int rows,
                                      int H, int W, int C, int Ho, int Wo, int kh, int kw, int sh, int sw, int ph,
                                      int pw, int dh, int dw)
{
    im2col_t(x, cols, p0, rows, H, W, C, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw);
}

extern "C" __global__ void im2col_bf16(const cvf_bf16* __restrict__ x, cvf_bf16* __restrict__ cols, int p0, int rows,
                                       int H, int W, int C, int Ho, int Wo, int kh, int kw, int sh, int sw, int ph,
                                       int pw, int dh, int dw)
{
    im2col_t(x, cols, p0, rows, H, W, C, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw);
}

extern "C" __global__ void im2col_parts(float* __restrict__ cols, int p0, int rows, int H, int W, int Ho, int Wo,
                                        int kh, int kw, int sh, int sw, int ph, int pw, int dh, int dw,
                                        const float* __restrict__ x0, const float* __restrict__ b0, int o0, int s0,
                                        int c0, int f0, const float* __restrict__ x1, const float* __restrict__ b1,
                                        int o1, int s1, int c1, int f1, const float* __restrict__ x2,
                                        const float* __restrict__ b2, int o2, int s2, int c2, int f2)
{
    im2col_parts_t(cols, p0, rows, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw, x0, b0, o0, s0, c0, f0,
                   x1, b1, o1, s1, c1, f1, x2, b2, o2, s2, c2, f2);
}

extern "C" __global__ void im2col_parts_f16(cvf_f16* __restrict__ cols, int p0, int rows, int H, int W, int Ho,
                                            int Wo, int kh, int kw, int sh, int sw, int ph, int pw, int dh, int dw,
                                            const cvf_f16* __restrict__ x0, const cvf_f16* __restrict__ b0, int o0,
                                            int s0, int c0, int f0, const cvf_f16* __restrict__ x1,
                                            const cvf_f16* __restrict__ b1, int o1, int s1, int c1, int f1,
                                            const cvf_f16* __restrict__ x2, const cvf_f16* __restrict__ b2, int o2,
                                            int s2, int c2, int f2)
{
    im2col_parts_t(cols, p0, rows, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw, x0, b0, o0, s0, c0, f0,
                   x1, b1, o1, s1, c1, f1, x2, b2, o2, s2, c2, f2);
}

extern "C" __global__ void im2col_parts_bf16(cvf_bf16* __restrict__ cols, int p0, int rows, int H, int W, int Ho,
                                             int Wo, int kh, int kw, int sh, int sw, int ph, int pw, int dh, int dw,
                                             const cvf_bf16* __restrict__ x0, const cvf_bf16* __restrict__ b0, int o0,
                                             int s0, int c0, int f0, const cvf_bf16* __restrict__ x1,
                                             const cvf_bf16* __restrict__ b1, int o1, int s1, int c1, int f1,
                                             const cvf_bf16* __restrict__ x2, const cvf_bf16* __restrict__ b2, int o2,
                                             int s2, int c2, int f2)
{
    im2col_parts_t(cols, p0, rows, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw, x0, b0, o0, s0, c0, f0,
                   x1, b1, o1, s1, c1, f1, x2, b2, o2, s2, c2, f2);
}
