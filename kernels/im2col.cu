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
