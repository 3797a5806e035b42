// LayerNorm over the last (channel) axis of a row-major (P, C) array, with affine weight
// and bias (cvflow/ops/norm.py layer_norm; SEA-RAFT's and GMFlow's channels-last norm).
// One row per thread: the mean and the variance of the float-centred values are summed
// in double and rounded to float, as the NumPy op's float32 statistics within rounding.

extern "C" __global__ void layer_norm_last(const float* __restrict__ x, const float* __restrict__ weight,
                                           const float* __restrict__ bias, float* __restrict__ out,
                                           int P, int C, float eps)
{
    int p = blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= P) return;
    const float* row = x + (long long)p * C;
    float* dst = out + (long long)p * C;
    double s = 0.0;
    for (int c = 0; c < C; ++c) s += (double)row[c];
    float mean = (float)(s / C);
    double q = 0.0;
    for (int c = 0; c < C; ++c) {
        float d = __fsub_rn(row[c], mean);
        q += (double)__fmul_rn(d, d);
    }
    float sd = sqrtf(__fadd_rn((float)(q / C), eps));
    for (int c = 0; c < C; ++c)
        dst[c] = __fadd_rn(__fmul_rn(__fdiv_rn(__fsub_rn(row[c], mean), sd), weight[c]), bias[c]);
}
