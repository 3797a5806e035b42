// im2col for NHWC convolutions (cvflow/ops/conv.py's weight matrix order).
// Row r of cols is output pixel p = p0 + r (p = (n*Ho + y)*Wo + x); column
// (i*kw + j)*C + c holds x[n, y*sh - ph + i*dh, x*sw - pw + j*dw, c], zero outside.
// One element per thread; a chunk holds rows*kh*kw*C < 2^31 elements.
extern "C" __global__ void im2col(const float* __restrict__ x, float* __restrict__ cols, int p0, int rows,
                                  int H, int W, int C, int Ho, int Wo, int kh, int kw,
                                  int sh, int sw, int ph, int pw, int dh, int dw)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int K = kh * kw * C;
    if (i >= rows * K) return;
    int k = i % K;
    int p = p0 + i / K;
    int c = k % C;
    int tap = k / C;
    int tj = tap % kw, ti = tap / kw;
    int xo = p % Wo;
    int q = p / Wo;
    int yo = q % Ho, n = q / Ho;
    int yi = yo * sh - ph + ti * dh;
    int xi = xo * sw - pw + tj * dw;
    float v = 0.0f;
    if (yi >= 0 && yi < H && xi >= 0 && xi < W) v = x[(((long long)n * H + yi) * W + xi) * C + c];
    cols[i] = v;
}

// im2col of the channel concatenation of up to three sources, each read through a view
// and given its pending bias and activation as it is gathered (the producer's epilogue
// folded into the consumer: no concatenated array, no separate bias/ReLU pass).
// Source s: xs (element offset os, pixel stride ss, channels cs; cs = 0: unused), bs its
// bias (cs,), fs = has_bias | act << 1 (act 1: ReLU). Zero padding stays zero.
// Columns (i*kw + j)*C + c, C = c0 + c1 + c2, as im2col's.
__device__ __forceinline__ float source_value(const float* __restrict__ x, const float* __restrict__ b, int o,
                                              int s, int f, long long pix, int c)
{
    float v = x[o + pix * s + c];
    if (f & 1) v = __fadd_rn(v, b[c]);
    if ((f >> 1) == 1) v = v > 0.0f ? v : 0.0f;
    return v;
}

extern "C" __global__ void im2col_parts(float* __restrict__ cols, int p0, int rows, int H, int W, int Ho, int Wo,
                                        int kh, int kw, int sh, int sw, int ph, int pw, int dh, int dw,
                                        const float* __restrict__ x0, const float* __restrict__ b0, int o0, int s0,
                                        int c0, int f0,
                                        const float* __restrict__ x1, const float* __restrict__ b1, int o1, int s1,
                                        int c1, int f1,
                                        const float* __restrict__ x2, const float* __restrict__ b2, int o2, int s2,
                                        int c2, int f2)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int C = c0 + c1 + c2;
    int K = kh * kw * C;
    if (i >= rows * K) return;
    int k = i % K;
    int p = p0 + i / K;
    int c = k % C;
    int tap = k / C;
    int tj = tap % kw, ti = tap / kw;
    int xo = p % Wo;
    int q = p / Wo;
    int yo = q % Ho, n = q / Ho;
    int yi = yo * sh - ph + ti * dh;
    int xi = xo * sw - pw + tj * dw;
    float v = 0.0f;
    if (yi >= 0 && yi < H && xi >= 0 && xi < W) {
        long long pix = ((long long)n * H + yi) * W + xi;
        if (c < c0) v = source_value(x0, b0, o0, s0, f0, pix, c);
        else if (c < c0 + c1) v = source_value(x1, b1, o1, s1, f1, pix, c - c0);
        else v = source_value(x2, b2, o2, s2, f2, pix, c - c0 - c1);
    }
    cols[i] = v;
}
