// Attention's row softmax, in place, over a block of scores: `rows` rows of `cols`
// (cvflow/ops/attention.py). Each row is scaled, gets its additive bias (if any), has its
// maximum subtracted, is exponentiated and divided by its sum (summed in double). One row
// per thread: no shared memory, so the emulator runs it as the GPU does. (A row per
// thread reads the block with a stride of `cols` between neighbouring threads, which is
// not coalesced; a warp per row needs shuffles the emulator does not run. Left as is.)
//
// The block holds `block_rows` consecutive rows of each of several problems (row g of the
// block is row row0 + g % block_rows of problem g / block_rows); the bias has
// `bias_problems` problems of (problem_rows, cols) and problem b reads bias problem
// b % bias_problems (a shifted-window mask, the same for every image of the batch).
//
// Scores are typed (T: float, or kernels/dtype.h's half storage: softmax_rows_f16 /
// _bf16); the bias stays float32 (a mask of 0 and -100 built once by the backend), and
// the scaled scores, maximum, exponentials and sum are float/double: each pass recomputes
// v = s*scale + bias from the stored score rather than storing it, so half storage is
// rounded once, on the final probability (float32 results are the same either way).
template <typename T>
__device__ __forceinline__ void softmax_rows_t(T* __restrict__ s, const float* __restrict__ bias, int rows,
                                               int cols, float scale, int has_bias, int block_rows,
                                               int problem_rows, int bias_problems, int row0)
{
    int g = blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= rows) return;
    T* row = s + (long long)g * cols;
    const float* b = bias;
    if (has_bias) {
        long long prob = (g / block_rows) % bias_problems;
        b = bias + (prob * problem_rows + row0 + g % block_rows) * (long long)cols;
    }
    float m = 0.0f;
    for (int c = 0; c < cols; ++c) {
        float v = __fmul_rn(cvf_f32(row[c]), scale);
        if (has_bias) v = __fadd_rn(v, b[c]);
        m = c == 0 ? v : fmaxf(m, v);
    }
    double sum = 0.0;
    for (int c = 0; c < cols; ++c) {
        float v = __fmul_rn(cvf_f32(row[c]), scale);
        if (has_bias) v = __fadd_rn(v, b[c]);
        sum += (double)expf(__fsub_rn(v, m));
    }
    float total = (float)sum;
    for (int c = 0; c < cols; ++c) {
        float v = __fmul_rn(cvf_f32(row[c]), scale);
        if (has_bias) v = __fadd_rn(v, b[c]);
        row[c] = cvf_from_f32<T>(__fdiv_rn(expf(__fsub_rn(v, m)), total));
    }
}

extern "C" __global__ void softmax_rows(float* __restrict__ s, const float* __restrict__ bias, int rows,
                                        int cols, float scale, int has_bias, int block_rows, int problem_rows,
                                        int bias_problems, int row0)
{
    softmax_rows_t(s, bias, rows, cols, scale, has_bias, block_rows, problem_rows, bias_problems, row0);
}

extern "C" __global__ void softmax_rows_f16(cvf_f16* __restrict__ s, const float* __restrict__ bias, int rows,
                                            int cols, float scale, int has_bias, int block_rows,
                                            int problem_rows, int bias_problems, int row0)
{
    softmax_rows_t(s, bias, rows, cols, scale, has_bias, block_rows, problem_rows, bias_problems, row0);
}

extern "C" __global__ void softmax_rows_bf16(cvf_bf16* __restrict__ s, const float* __restrict__ bias, int rows,
                                             int cols, float scale, int has_bias, int block_rows,
                                             int problem_rows, int bias_problems, int row0)
{
    softmax_rows_t(s, bias, rows, cols, scale, has_bias, block_rows, problem_rows, bias_problems, row0);
}
