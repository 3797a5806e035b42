// Concatenation by copies (cvflow/backends/cuda/k_copy.py), up to four parts per launch.
//
// Part p is a block of rows_p x cols_p elements, read at src_p[off_p + r * stride_p + c]
// (a C-contiguous array, or a channel slice of one: stride_p its row length, off_p the
// slice's first channel) and written at out[dst_p + r * out_stride + c]. The launch's
// threads cover the parts' elements end to end, one element each; a part with no rows
// is absent.

__device__ __forceinline__ bool copy_part(int& i, const float* __restrict__ src, int rows, int cols, int stride,
                                          int off, int dst, float* __restrict__ out, int out_stride)
{
    int n = rows * cols;
    if (i >= n) {
        i -= n;
        return false;
    }
    int r = i / cols, c = i - r * cols;
    out[(long long)dst + (long long)r * out_stride + c] = src[(long long)off + (long long)r * stride + c];
    return true;
}

extern "C" __global__ void concat4(float* __restrict__ out, int out_stride,
                                   const float* __restrict__ s0, int r0, int c0, int t0, int o0, int d0,
                                   const float* __restrict__ s1, int r1, int c1, int t1, int o1, int d1,
                                   const float* __restrict__ s2, int r2, int c2, int t2, int o2, int d2,
                                   const float* __restrict__ s3, int r3, int c3, int t3, int o3, int d3)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (copy_part(i, s0, r0, c0, t0, o0, d0, out, out_stride)) return;
    if (copy_part(i, s1, r1, c1, t1, o1, d1, out, out_stride)) return;
    if (copy_part(i, s2, r2, c2, t2, o2, d2, out, out_stride)) return;
    copy_part(i, s3, r3, c3, t3, o3, d3, out, out_stride);
}
