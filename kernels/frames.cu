// A frame pair as the models take it: two (H, W, Cin) frames (BGR, Cin = 3; or gray,
// Cin = 1, repeated) of uint8 or float32 0..255 -> out (2, Hp, Wp, 3) RGB,
// replicate-padded (the source pixel of (y, x) is (clamp(y - top), clamp(x - left))) and
// normalised as the NumPy expressions of cvflow/backends/base.py `Backend.frames`:
// mode 0: 2 * (v / 255) - 1; mode 1: v / 255; mode 2: (v / 255 - mean[c]) / std[c].
// Rounded as those separate float32 passes (no FMA). One output element per thread.
// Entry points frames_<input>[_f16|_bf16]: input uint8 (u8) or float32 (f32) frames; the
// output is float32, or kernels/dtype.h's half storage (the float32 value rounded once on
// store: the first activations of a half-precision pass). mean/std stay float32.

__device__ __forceinline__ float frame_value(float v, int c, int mode, const float* __restrict__ ms)
{
    float u = __fdiv_rn(v, 255.0f);
    if (mode == 0) return __fsub_rn(__fmul_rn(2.0f, u), 1.0f);
    if (mode == 1) return u;
    return __fdiv_rn(__fsub_rn(u, ms[c]), ms[3 + c]);
}

// The one index decoding of every entry point: output element i -> its frame n, its
// channel c and its source element in that frame.
__device__ __forceinline__ long long frame_source(int i, int H, int W, int cin, int Hp, int Wp, int top,
                                                  int left, int* n, int* c)
{
    *c = i % 3;
    int x = (i / 3) % Wp;
    int y = (i / (3 * Wp)) % Hp;
    *n = i / (3 * Wp * Hp);
    int ys = min(max(y - top, 0), H - 1), xs = min(max(x - left, 0), W - 1);
    return ((long long)ys * W + xs) * cin + (cin == 3 ? 2 - *c : 0);  // BGR -> RGB
}

// a, b: (H, W, cin) frames of S (unsigned char or float); ms: (6,) mean then std (read in
// mode 2 only); out (2, Hp, Wp, 3) of T.
template <typename S, typename T>
__device__ __forceinline__ void frames_t(const S* __restrict__ a, const S* __restrict__ b,
                                         const float* __restrict__ ms, T* __restrict__ out, int H, int W, int cin,
                                         int Hp, int Wp, int top, int left, int mode)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= 2 * Hp * Wp * 3) return;
    int n, c;
    long long s = frame_source(i, H, W, cin, Hp, Wp, top, left, &n, &c);
    out[i] = cvf_from_f32<T>(frame_value((float)(n == 0 ? a[s] : b[s]), c, mode, ms));
}

extern "C" __global__ void frames_u8(const unsigned char* __restrict__ a, const unsigned char* __restrict__ b,
                                     const float* __restrict__ ms, float* __restrict__ out, int H, int W, int cin,
                                     int Hp, int Wp, int top, int left, int mode)
{
    frames_t(a, b, ms, out, H, W, cin, Hp, Wp, top, left, mode);
}

extern "C" __global__ void frames_u8_f16(const unsigned char* __restrict__ a, const unsigned char* __restrict__ b,
                                         const float* __restrict__ ms, cvf_f16* __restrict__ out, int H, int W,
                                         int cin, int Hp, int Wp, int top, int left, int mode)
{
    frames_t(a, b, ms, out, H, W, cin, Hp, Wp, top, left, mode);
}

extern "C" __global__ void frames_u8_bf16(const unsigned char* __restrict__ a, const unsigned char* __restrict__ b,
                                          const float* __restrict__ ms, cvf_bf16* __restrict__ out, int H, int W,
                                          int cin, int Hp, int Wp, int top, int left, int mode)
{
    frames_t(a, b, ms, out, H, W, cin, Hp, Wp, top, left, mode);
}

extern "C" __global__ void frames_f32(const float* __restrict__ a, const float* __restrict__ b,
                                      const float* __restrict__ ms, float* __restrict__ out, int H, int W, int cin,
                                      int Hp, int Wp, int top, int left, int mode)
{
    frames_t(a, b, ms, out, H, W, cin, Hp, Wp, top, left, mode);
}

extern "C" __global__ void frames_f32_f16(const float* __restrict__ a, const float* __restrict__ b,
                                          const float* __restrict__ ms, cvf_f16* __restrict__ out, int H, int W,
                                          int cin, int Hp, int Wp, int top, int left, int mode)
{
    frames_t(a, b, ms, out, H, W, cin, Hp, Wp, top, left, mode);
}

extern "C" __global__ void frames_f32_bf16(const float* __restrict__ a, const float* __restrict__ b,
                                           const float* __restrict__ ms, cvf_bf16* __restrict__ out, int H, int W,
                                           int cin, int Hp, int Wp, int top, int left, int mode)
{
    frames_t(a, b, ms, out, H, W, cin, Hp, Wp, top, left, mode);
}
