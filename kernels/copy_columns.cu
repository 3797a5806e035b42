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
