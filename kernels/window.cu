// Swin-style windows of NHWC maps (cvflow/ops/window.py), one element per thread.
// A map of H x W is cut into splits x splits windows of hh x ww (H, W multiples of
// splits); the windows of an image are ordered (window row, window column). A shift
// (sh, sw) reads the map rolled by (-sh, -sw) (GMFlow's shifted windows), and merging
// rolls back by (+sh, +sw). Both kernels run over the map's elements (channel fastest,
// so both sides are read and written in runs of C) and share one index map.
// Pure copies: typed (T: float, or kernels/dtype.h's half storage, <name>_f16 / _bf16),
// every value passes unchanged.

// Element i of the map (N, H, W, C) -> its index in the windows (N*splits*splits, hh*ww, C):
// map pixel (y, x) is pixel ((y - sh) mod H, (x - sw) mod W) of the unrolled map.
__device__ __forceinline__ long long window_slot(int i, int H, int W, int C, int splits, int sh, int sw)
{
    int hh = H / splits, ww = W / splits;
    int c = i % C, t = i / C;
    int xx = t % W, y = (t / W) % H, n = t / (W * H);
    y = y - sh < 0 ? y - sh + H : y - sh;
    xx = xx - sw < 0 ? xx - sw + W : xx - sw;
    long long b = ((long long)n * splits + y / hh) * splits + xx / ww;
    return (b * hh * ww + (y % hh) * ww + xx % ww) * C + c;
}

// x (N, H, W, C) -> out (N*splits*splits, hh*ww, C): window pixel p of window (wy, wx)
// holds map pixel (wy*hh + p / ww + sh, wx*ww + p % ww + sw) mod (H, W).
template <typename T>
__device__ __forceinline__ void window_partition_t(const T* __restrict__ x, T* __restrict__ out, int N, int H,
                                                   int W, int C, int splits, int sh, int sw)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N * H * W * C) return;
    out[window_slot(i, H, W, C, splits, sh, sw)] = x[i];
}

// Inverse: win (N*splits*splits, hh*ww, C) -> out (N, H, W, C).
template <typename T>
__device__ __forceinline__ void window_merge_t(const T* __restrict__ win, T* __restrict__ out, int N, int H,
                                               int W, int C, int splits, int sh, int sw)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N * H * W * C) return;
    out[i] = win[window_slot(i, H, W, C, splits, sh, sw)];
}

extern "C" __global__ void window_partition(const float* __restrict__ x, float* __restrict__ out, int N, int H,
                                            int W, int C, int splits, int sh, int sw)
{
    window_partition_t(x, out, N, H, W, C, splits, sh, sw);
}

extern "C" __global__ void window_partition_f16(const cvf_f16* __restrict__ x, cvf_f16* __restrict__ out, int N,
                                                int H, int W, int C, int splits, int sh, int sw)
{
    window_partition_t(x, out, N, H, W, C, splits, sh, sw);
}

extern "C" __global__ void window_partition_bf16(const cvf_bf16* __restrict__ x, cvf_bf16* __restrict__ out, int N,
                                                 int H, int W, int C, int splits, int sh, int sw)
{
    window_partition_t(x, out, N, H, W, C, splits, sh, sw);
}

extern "C" __global__ void window_merge(const float* __restrict__ win, float* __restrict__ out, int N, int H,
                                        int W, int C, int splits, int sh, int sw)
{
    window_merge_t(win, out, N, H, W, C, splits, sh, sw);
}

extern "C" __global__ void window_merge_f16(const cvf_f16* __restrict__ win, cvf_f16* __restrict__ out, int N,
                                            int H, int W, int C, int splits, int sh, int sw)
{
    window_merge_t(win, out, N, H, W, C, splits, sh, sw);
}

extern "C" __global__ void window_merge_bf16(const cvf_bf16* __restrict__ win, cvf_bf16* __restrict__ out, int N,
                                             int H, int W, int C, int splits, int sh, int sw)
{
    window_merge_t(win, out, N, H, W, C, splits, sh, sw);
}
