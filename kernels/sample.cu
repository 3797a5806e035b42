// Bilinear sampling at pixel coordinates (0 at the centre of the first pixel) and backward
// warps (cvflow/ops/sample.py). border = 0: taps outside contribute 0 (grid_sample zeros);
// border = 1: tap indices clamp to the edge (FlowNet2's Resample2d). Rounded as the NumPy
// op: weight = wy*wx, out = ((t00 + t01) + t10) + t11 with t = img * weight.
// T: float, or kernels/dtype.h's half storage (<name>_f16 / <name>_bf16) for img and out;
// the positions (coordinates or a flow) stay float32, as do the weights and the sum,
// rounded once on store.

// out[n, y, x, c] = img sampled at pos[n, y, x] (is_flow = 0: pos is (x, y); is_flow = 1:
// pos is a flow and the position is (x + pos_x, y + pos_y)). img (N, H, W, C),
// pos (N, h, w, 2), out (N, h, w, C). img may be a channel slice of a wider map: its pixel
// (n, y, x) starts at img[((n*H + y)*W + x)*S + O] (S = C, O = 0 for a whole map).
// One output element per thread.
template <typename T>
__device__ __forceinline__ void bilinear_sample_t(const T* __restrict__ img, const float* __restrict__ pos,
                                                  T* __restrict__ out, int N, int H, int W, int C, int h, int w,
                                                  int is_flow, int border, int S, int O)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N * h * w * C) return;
    int c = i % C;
    int p = i / C;
    int n = p / (h * w);
    float px = pos[2 * (long long)p], py = pos[2 * (long long)p + 1];
    if (is_flow) {
        px = __fadd_rn((float)(p % w), px);
        py = __fadd_rn((float)((p / w) % h), py);
    }
    float x0f = floorf(px), y0f = floorf(py);
    float ax = __fsub_rn(px, x0f), ay = __fsub_rn(py, y0f);
    // far-away (or NaN) corners clamp to just outside: both taps stay outside
    int x0 = (int)fminf(fmaxf(x0f, -2.0f), (float)W);
    int y0 = (int)fminf(fmaxf(y0f, -2.0f), (float)H);
    float acc = 0.0f;
    for (int dy = 0; dy < 2; ++dy) {
        int yi = y0 + dy;
        float wy = dy ? ay : __fsub_rn(1.0f, ay);
        if (!border && (yi < 0 || yi >= H)) wy = 0.0f;
        yi = min(max(yi, 0), H - 1);
        for (int dx = 0; dx < 2; ++dx) {
            int xi = x0 + dx;
            float wx = dx ? ax : __fsub_rn(1.0f, ax);
            if (!border && (xi < 0 || xi >= W)) wx = 0.0f;
            xi = min(max(xi, 0), W - 1);
            float v = cvf_f32(img[(((long long)n * H + yi) * W + xi) * S + O + c]);
            acc = __fadd_rn(acc, __fmul_rn(v, __fmul_rn(wy, wx)));
        }
    }
    out[i] = cvf_from_f32<T>(acc);
}

extern "C" __global__ void bilinear_sample(const float* __restrict__ img, const float* __restrict__ pos,
                                           float* __restrict__ out, int N, int H, int W, int C, int h, int w,
                                           int is_flow, int border, int S, int O)
{
    bilinear_sample_t(img, pos, out, N, H, W, C, h, w, is_flow, border, S, O);
}

extern "C" __global__ void bilinear_sample_f16(const cvf_f16* __restrict__ img, const float* __restrict__ pos,
                                               cvf_f16* __restrict__ out, int N, int H, int W, int C, int h, int w,
                                               int is_flow, int border, int S, int O)
{
    bilinear_sample_t(img, pos, out, N, H, W, C, h, w, is_flow, border, S, O);
}

extern "C" __global__ void bilinear_sample_bf16(const cvf_bf16* __restrict__ img, const float* __restrict__ pos,
                                                cvf_bf16* __restrict__ out, int N, int H, int W, int C, int h, int w,
                                                int is_flow, int border, int S, int O)
{
    bilinear_sample_t(img, pos, out, N, H, W, C, h, w, is_flow, border, S, O);
}
