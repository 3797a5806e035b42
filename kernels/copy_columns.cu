// Copies between row-major (rows, width) layouts at column offsets: concatenation along
// any axis (each part into its columns of the output, rows = the product of the leading
// axes), channel slices made contiguous, crops. One element per thread.
// dst[r, dst_offset + j] = src[r, src_offset + j] for r < rows, j < width.
extern "C" __global__ void copy_columns(const float* __restrict__ src, float* __restrict__ dst, int rows,
                                        int width, int src_width, int src_offset, int dst_width, int dst_offset)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows * width) return;
    int r = i / width, j = i % width;
    dst[(long long)r * dst_width + dst_offset + j] = src[(long long)r * src_width + src_offset + j];
}

// Up to four parts (rows, w_k) side by side into dst (rows, dst_width) from column
// dst_offset: one launch per concatenation (w_k = 0 for an unused part).
extern "C" __global__ void concat4(const float* __restrict__ a0, const float* __restrict__ a1,
                                   const float* __restrict__ a2, const float* __restrict__ a3,
                                   float* __restrict__ dst, int rows, int w0, int w1, int w2, int w3,
                                   int dst_width, int dst_offset)
{
    int width = w0 + w1 + w2 + w3;
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows * width) return;
    long long r = i / width;
    int j = i % width;
    float v;
    if (j < w0) v = a0[r * w0 + j];
    else if ((j -= w0) < w1) v = a1[r * w1 + j];
    else if ((j -= w1) < w2) v = a2[r * w2 + j];
    else v = a3[r * w3 + j - w2];
    dst[r * dst_width + dst_offset + (i % width)] = v;
}
