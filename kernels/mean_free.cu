// FlowNet2's input protocol (cvflow/ops/frames.py): a frame pair becomes one (1, H, W, 6)
// map, RGB of frame 0 then of frame 1, minus the per-channel mean over both frames,
// divided by rgb_max. Frames as uploaded: (H, W, cin) BGR (cin = 3) or gray (cin = 1,
// repeated), uint8 or float32 0..255. Three launches, no shared memory: per-chunk partial
// sums in double, the three means, then one thread per output element.
// The output is typed (O: float, or kernels/dtype.h's half storage: pair_normalize_u8_f16,
// pair_normalize_f32_bf16, ...): the first activation of a half-precision pass. The frames
// stay as uploaded (uint8 or float32) and the statistics (sums, means) float64/float32:
// a mean over all pixels in half would lose the 8 bits of the frames' values.

// The BGR channel c of pixel m.
template <typename T>
__device__ __forceinline__ float pixel(const T* __restrict__ f, long long m, int cin, int c)
{
    return (float)f[m * cin + (cin == 3 ? c : 0)];
}

// partial[k*6 + j] = sum over pixels m of chunk k of frame j/3's BGR channel j%3, in double
// (one thread per chunk and j).
template <typename T>
__device__ __forceinline__ void partial_sums(const T* __restrict__ f0, const T* __restrict__ f1,
                                             double* __restrict__ partial, int M, int cin, int chunk, int chunks)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= chunks * 6) return;
    int j = i % 6, k = i / 6;
    const T* f = j < 3 ? f0 : f1;
    int m1 = min(M, (k + 1) * chunk);
    double s = 0.0;
    for (int m = k * chunk; m < m1; ++m) s += (double)pixel(f, m, cin, j % 3);
    partial[i] = s;
}

// out[m, j] = (frame_{j/3}[m, BGR 2 - j%3] - mean[2 - j%3]) / rgb_max, float32 roundings as
// the NumPy op (subtract, then divide), then one rounding to O. out: (M, 6).
template <typename T, typename O>
__device__ __forceinline__ void normalize(const T* __restrict__ f0, const T* __restrict__ f1,
                                          const float* __restrict__ mean, O* __restrict__ out, int M, int cin,
                                          float rgb_max)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= M * 6) return;
    int j = i % 6, m = i / 6;
    int c = 2 - j % 3;
    float v = pixel(j < 3 ? f0 : f1, m, cin, c);
    out[i] = cvf_from_f32<O>(__fdiv_rn(__fsub_rn(v, mean[c]), rgb_max));
}

extern "C" __global__ void pair_partial_u8(const unsigned char* __restrict__ f0,
                                           const unsigned char* __restrict__ f1,
                                           double* __restrict__ partial, int M, int cin, int chunk, int chunks)
{
    partial_sums(f0, f1, partial, M, cin, chunk, chunks);
}

extern "C" __global__ void pair_partial_f32(const float* __restrict__ f0, const float* __restrict__ f1,
                                            double* __restrict__ partial, int M, int cin, int chunk, int chunks)
{
    partial_sums(f0, f1, partial, M, cin, chunk, chunks);
}

// mean[c] = float((sum of frame 0's channel c + sum of frame 1's) / (2*M)), BGR order, the
// chunks added in order (three threads).
extern "C" __global__ void pair_mean(const double* __restrict__ partial, float* __restrict__ mean, int M,
                                     int chunks)
{
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= 3) return;
    double a = 0.0, b = 0.0;
    for (int k = 0; k < chunks; ++k) {
        a += partial[k * 6 + c];
        b += partial[k * 6 + 3 + c];
    }
    mean[c] = (float)((a + b) / (2.0 * (double)M));
}

extern "C" __global__ void pair_normalize_u8(const unsigned char* __restrict__ f0,
                                             const unsigned char* __restrict__ f1, const float* __restrict__ mean,
                                             float* __restrict__ out, int M, int cin, float rgb_max)
{
    normalize(f0, f1, mean, out, M, cin, rgb_max);
}

extern "C" __global__ void pair_normalize_f32(const float* __restrict__ f0, const float* __restrict__ f1,
                                              const float* __restrict__ mean, float* __restrict__ out, int M,
                                              int cin, float rgb_max)
{
    normalize(f0, f1, mean, out, M, cin, rgb_max);
}

extern "C" __global__ void pair_normalize_u8_f16(const unsigned char* __restrict__ f0,
                                                 const unsigned char* __restrict__ f1,
                                                 const float* __restrict__ mean, cvf_f16* __restrict__ out,
                                                 int M, int cin, float rgb_max)
{
    normalize(f0, f1, mean, out, M, cin, rgb_max);
}

extern "C" __global__ void pair_normalize_u8_bf16(const unsigned char* __restrict__ f0,
                                                  const unsigned char* __restrict__ f1,
                                                  const float* __restrict__ mean, cvf_bf16* __restrict__ out,
                                                  int M, int cin, float rgb_max)
{
    normalize(f0, f1, mean, out, M, cin, rgb_max);
}

extern "C" __global__ void pair_normalize_f32_f16(const float* __restrict__ f0, const float* __restrict__ f1,
                                                  const float* __restrict__ mean, cvf_f16* __restrict__ out,
                                                  int M, int cin, float rgb_max)
{
    normalize(f0, f1, mean, out, M, cin, rgb_max);
}

extern "C" __global__ void pair_normalize_f32_bf16(const float* __restrict__ f0, const float* __restrict__ f1,
                                                   const float* __restrict__ mean, cvf_bf16* __restrict__ out,
                                                   int M, int cin, float rgb_max)
{
    normalize(f0, f1, mean, out, M, cin, rgb_max);
}
