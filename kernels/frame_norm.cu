// Frames into a model's input, one output element per thread: BGR (h, w, 3) float32
// 0..255 -> slot `index` of out (frames, H, W, 3), RGB, ((x / 255) - mean) / std, edge-
// replicated by (top, left) to H x W (cvflow/backends/base.py frames, cvflow/ops/pad.py;
// mean 0, std 1 give x / 255 exactly, mean 0.5, std 0.5 give 2 * (x / 255) - 1 exactly).
extern "C" __global__ void frame_normalize(const float* __restrict__ img, float* __restrict__ out, int h, int w,
                                           int H, int W, int top, int left, int index, float m0, float m1,
                                           float m2, float s0, float s1, float s2)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= H * W * 3) return;
    int c = i % 3, x = (i / 3) % W, y = i / (3 * W);
    int sy = min(max(y - top, 0), h - 1), sx = min(max(x - left, 0), w - 1);
    float v = __fdiv_rn(img[((long long)sy * w + sx) * 3 + 2 - c], 255.0f);
    float m = c == 0 ? m0 : (c == 1 ? m1 : m2);
    float s = c == 0 ? s0 : (c == 1 ? s1 : s2);
    out[(long long)index * H * W * 3 + i] = __fdiv_rn(__fsub_rn(v, m), s);
}
