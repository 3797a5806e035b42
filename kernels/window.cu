// Swin-style windows of NHWC maps (cvflow/ops/window.py), one element per thread.
// A map of H x W is cut into splits x splits windows of hh x ww (H, W multiples of
// splits); the windows of an image are ordered (window row, window column). A shift
// (sh, sw) reads the map rolled by (-sh, -sw) (GMFlow's shifted windows), and merging
// rolls back by (+sh, +sw).

// x (N, H, W, C) -> out (N*splits*splits, hh*ww, C).
extern "C" __global__ void window_partition(const float* __restrict__ x, float* __restrict__ out, int N, int H,
                                            int W, int C, int splits, int sh, int sw)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N * H * W * C) return;
    int hh = H / splits, ww = W / splits;
    int c = i % C, t = i / C;
    int pix = t % (hh * ww), b = t / (hh * ww);
    int win = b % (splits * splits), n = b / (splits * splits);
    int y = (win / splits) * hh + pix / ww + sh, xx = (win % splits) * ww + pix % ww + sw;
    y = y >= H ? y - H : y;
    xx = xx >= W ? xx - W : xx;
    out[i] = x[(((long long)n * H + y) * W + xx) * C + c];
}

// Inverse: win (N*splits*splits, hh*ww, C) -> out (N, H, W, C).
extern "C" __global__ void window_merge(const float* __restrict__ win, float* __restrict__ out, int N, int H,
                                        int W, int C, int splits, int sh, int sw)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N * H * W * C) return;
    int hh = H / splits, ww = W / splits;
    int c = i % C, t = i / C;
    int xx = t % W, y = (t / W) % H, n = t / (W * H);
    y = y - sh < 0 ? y - sh + H : y - sh;
    xx = xx - sw < 0 ? xx - sw + W : xx - sw;
    long long b = ((long long)n * splits + y / hh) * splits + xx / ww;
    out[i] = win[(b * hh * ww + (y % hh) * ww + xx % ww) * C + c];
}
