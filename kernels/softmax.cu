// Attention's row softmax, in place, over a block of scores: `rows` rows of `cols`
// (cvflow/ops/attention.py). Each row is scaled, gets its additive bias (if any), has its
// maximum subtracted, is exponentiated and divided by its sum (summed in double). One row
// per thread: no shared memory, so the emulator runs it as the GPU does.
//
// The block holds `block_rows` consecutive rows of each of several problems (row g of the
// block is row row0 + g % block_rows of problem g / block_rows); the bias has
// `bias_problems` problems of (problem_rows, cols) and problem b reads bias problem
// b % bias_problems (a shifted-window mask, the same for every image of the batch).
extern "C" __global__ void softmax_rows(float* __restrict__ s, const float* __restrict__ bias, int rows,
                                        int cols, float scale, int has_bias, int block_rows, int problem_rows,
                                        int bias_problems, int row0)
{
    int g = blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= rows) return;
    float* row = s + (long long)g * cols;
    const float* b = bias;
    if (has_bias) {
        long long prob = (g / block_rows) % bias_problems;
        b = bias + (prob * problem_rows + row0 + g % block_rows) * (long long)cols;
    }
    float m = 0.0f;
    for (int c = 0; c < cols; ++c) {
        float v = __fmul_rn(row[c], scale);
        if (has_bias) v = __fadd_rn(v, b[c]);
        row[c] = v;
        m = c == 0 ? v : fmaxf(m, v);
    }
    double sum = 0.0;
    for (int c = 0; c < cols; ++c) {
        float e = expf(__fsub_rn(row[c], m));
        row[c] = e;
        sum += (double)e;
    }
    float total = (float)sum;
    for (int c = 0; c < cols; ++c) row[c] = __fdiv_rn(row[c], total);
}
