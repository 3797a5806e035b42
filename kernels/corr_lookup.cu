// RAFT's correlation window lookup (cvflow/ops/corr.py). For pixel p and pyramid level
// l, the (2r+1)^2 window around coords[p] * 0.5^l is sampled bilinearly with zeros
// outside the Hl x Wl map; channel l*K*K + a*K + b (K = 2r+1) holds offset
// (dx, dy) = (a - r, b - r): the x offset outermost. All samples of a window share
// one fractional part, so the sampling is separable: 2-tap interpolation along x,
// then along y, rounded as the NumPy op (no FMA). One output element per thread.
// T: float, or kernels/dtype.h's half storage (<name>_f16 / <name>_bf16) for the
// correlation volume, the features, the on-the-fly taps and the output (issue 20: the
// volume is stored in half); coords stay float32 (a sub-pixel position in half would be
// off by up to 1/16 px at x = 1000) and every sum is taken in float, rounded once on store.

// Taps along one axis: tap t (0..2r+1) of the window at position `pos` lies at
// base + t (base = floor(pos) - r, clamped far outside so the int cast is defined);
// w0/w1 weight taps t and t+1 of sample t and are 0 for taps outside [0, size).
__device__ __forceinline__ void axis_tap(float pos, int r, int size, int t, int* i0, int* i1,
                                         float* w0, float* w1)
{
    float p0 = floorf(pos);
    float frac = __fsub_rn(pos, p0);
    int base = (int)fminf(fmaxf(p0, (float)(-r - 2)), (float)(size + r + 1)) - r;
    int a = base + t, b = base + t + 1;
    *w0 = (a >= 0 && a < size) ? __fsub_rn(1.0f, frac) : 0.0f;
    *w1 = (b >= 0 && b < size) ? frac : 0.0f;
    *i0 = min(max(a, 0), size - 1);
    *i1 = min(max(b, 0), size - 1);
}

// v(x, y) for the 2x2 taps, weighted: x first, then y.
__device__ __forceinline__ float interp(float v00, float v10, float v01, float v11,
                                        float wx0, float wx1, float wy0, float wy1)
{
    float u0 = __fadd_rn(__fmul_rn(v00, wx0), __fmul_rn(v10, wx1));
    float u1 = __fadd_rn(__fmul_rn(v01, wx0), __fmul_rn(v11, wx1));
    return __fadd_rn(__fmul_rn(u0, wy0), __fmul_rn(u1, wy1));
}

// The one decoding of a window element shared by every lookup: element (a, b) of pixel p's
// window in the volume of one level (vol (P, Hl, Wl), scale = 0.5^level), 0 when the level
// was pooled away (every tap outside).
template <typename T>
__device__ __forceinline__ float window_value(const T* __restrict__ vol, const float* __restrict__ coords, int p,
                                              int Hl, int Wl, int r, int a, int b, float scale)
{
    if (Hl == 0 || Wl == 0) return 0.0f;
    int x0, x1, y0, y1;
    float wx0, wx1, wy0, wy1;
    axis_tap(__fmul_rn(coords[2 * p], scale), r, Wl, a, &x0, &x1, &wx0, &wx1);
    axis_tap(__fmul_rn(coords[2 * p + 1], scale), r, Hl, b, &y0, &y1, &wy0, &wy1);
    const T* v = vol + (long long)p * Hl * Wl;
    return interp(cvf_f32(v[y0 * Wl + x0]), cvf_f32(v[y0 * Wl + x1]), cvf_f32(v[y1 * Wl + x0]),
                  cvf_f32(v[y1 * Wl + x1]), wx0, wx1, wy0, wy1);
}

// Lookup in the full volume of level `level`: vol (P, Hl, Wl), coords (P, 2) (x, y) at
// level 0, out (P, levels*K*K); scale = 0.5^level.
template <typename T>
__device__ __forceinline__ void raft_corr_lookup_t(const T* __restrict__ vol, const float* __restrict__ coords,
                                                   T* __restrict__ out, int P, int Hl, int Wl, int r, int level,
                                                   int levels, float scale)
{
    int K = 2 * r + 1;
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= P * K * K) return;
    int b = i % K;
    int a = (i / K) % K;
    int p = i / (K * K);
    out[((long long)p * levels + level) * K * K + a * K + b] =
        cvf_from_f32<T>(window_value(vol, coords, p, Hl, Wl, r, a, b, scale));
}

// On the fly, step 1: taps[q, t, u] (q = p - p0 < rows; S = 2r+2 taps per axis, t along x,
// u along y) = <f1[p], f2[n, y_u, x_t]> for the clamped tap positions, n = p / HW.
// f1 (P, D) unscaled: each element is scaled by inv = 1/sqrt(D) as it is read, rounded as
// a scaled copy of T would be (no copy of the feature map); f2 (N, Hl, Wl, D). The dot
// product sums in float; the taps are stored in T, as the volume would be.
template <typename T>
__device__ __forceinline__ void raft_corr_dots_t(const T* __restrict__ f1, const T* __restrict__ f2,
                                                 const float* __restrict__ coords, T* __restrict__ taps, int p0,
                                                 int rows, int HW, int Hl, int Wl, int D, int r, float scale,
                                                 float inv)
{
    int S = 2 * r + 2;
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows * S * S) return;
    int u = i % S;
    int t = (i / S) % S;
    int p = p0 + i / (S * S);
    int x0, x1, y0, y1;
    float w0, w1;
    axis_tap(__fmul_rn(coords[2 * p], scale), r, Wl, t, &x0, &x1, &w0, &w1);
    axis_tap(__fmul_rn(coords[2 * p + 1], scale), r, Hl, u, &y0, &y1, &w0, &w1);
    const T* a = f1 + (long long)p * D;
    const T* b = f2 + (((long long)(p / HW) * Hl + y0) * Wl + x0) * D;
    float s = 0.0f;
    for (int d = 0; d < D; ++d) s += cvf_f32(cvf_from_f32<T>(__fmul_rn(cvf_f32(a[d]), inv))) * cvf_f32(b[d]);
    taps[i] = cvf_from_f32<T>(s);
}

// On the fly, step 2: the window of pixels p0 .. p0+rows from their taps (as raft_corr_lookup).
template <typename T>
__device__ __forceinline__ void raft_corr_interp_t(const T* __restrict__ taps, const float* __restrict__ coords,
                                                   T* __restrict__ out, int p0, int rows, int Hl, int Wl, int r,
                                                   int level, int levels, float scale)
{
    int K = 2 * r + 1, S = 2 * r + 2;
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows * K * K) return;
    int b = i % K;
    int a = (i / K) % K;
    int q = i / (K * K);
    int p = p0 + q;
    T* dst = out + ((long long)p * levels + level) * K * K + a * K + b;
    if (Hl == 0 || Wl == 0) {
        *dst = cvf_from_f32<T>(0.0f);
        return;
    }
    int x0, x1, y0, y1;
    float wx0, wx1, wy0, wy1;
    axis_tap(__fmul_rn(coords[2 * p], scale), r, Wl, a, &x0, &x1, &wx0, &wx1);
    axis_tap(__fmul_rn(coords[2 * p + 1], scale), r, Hl, b, &y0, &y1, &wy0, &wy1);
    const T* v = taps + (long long)q * S * S;
    *dst = cvf_from_f32<T>(interp(cvf_f32(v[a * S + b]), cvf_f32(v[(a + 1) * S + b]), cvf_f32(v[a * S + b + 1]),
                                  cvf_f32(v[(a + 1) * S + b + 1]), wx0, wx1, wy0, wy1));
}

// raft_corr_lookup for four levels in one launch: vol0..vol3 (P, H_l, W_l); out (P, 4*K*K).
template <typename T>
__device__ __forceinline__ void raft_corr_lookup4_t(const T* __restrict__ vol0, const T* __restrict__ vol1,
                                                    const T* __restrict__ vol2, const T* __restrict__ vol3,
                                                    const float* __restrict__ coords, T* __restrict__ out, int P,
                                                    int H0, int W0, int H1, int W1, int H2, int W2, int H3, int W3,
                                                    int r)
{
    int K = 2 * r + 1;
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= P * 4 * K * K) return;
    int b = i % K;
    int a = (i / K) % K;
    int level = (i / (K * K)) % 4;
    int p = i / (4 * K * K);
    const T* vol = level == 0 ? vol0 : (level == 1 ? vol1 : (level == 2 ? vol2 : vol3));
    int Hl = level == 0 ? H0 : (level == 1 ? H1 : (level == 2 ? H2 : H3));
    int Wl = level == 0 ? W0 : (level == 1 ? W1 : (level == 2 ? W2 : W3));
    float scale = level == 0 ? 1.0f : (level == 1 ? 0.5f : (level == 2 ? 0.25f : 0.125f));
    out[i] = cvf_from_f32<T>(window_value(vol, coords, p, Hl, Wl, r, a, b, scale));
}

extern "C" __global__ void raft_corr_lookup(const float* __restrict__ vol, const float* __restrict__ coords,
                                            float* __restrict__ out, int P, int Hl, int Wl, int r, int level,
                                            int levels, float scale)
{
    raft_corr_lookup_t(vol, coords, out, P, Hl, Wl, r, level, levels, scale);
}

extern "C" __global__ void raft_corr_lookup_f16(const cvf_f16* __restrict__ vol, const float* __restrict__ coords,
                                                cvf_f16* __restrict__ out, int P, int Hl, int Wl, int r, int level,
                                                int levels, float scale)
{
    raft_corr_lookup_t(vol, coords, out, P, Hl, Wl, r, level, levels, scale);
}

extern "C" __global__ void raft_corr_lookup_bf16(const cvf_bf16* __restrict__ vol, const float* __restrict__ coords,
                                                 cvf_bf16* __restrict__ out, int P, int Hl, int Wl, int r, int level,
                                                 int levels, float scale)
{
    raft_corr_lookup_t(vol, coords, out, P, Hl, Wl, r, level, levels, scale);
}

extern "C" __global__ void raft_corr_dots(const float* __restrict__ f1, const float* __restrict__ f2,
                                          const float* __restrict__ coords, float* __restrict__ taps, int p0,
                                          int rows, int HW, int Hl, int Wl, int D, int r, float scale, float inv)
{
    raft_corr_dots_t(f1, f2, coords, taps, p0, rows, HW, Hl, Wl, D, r, scale, inv);
}

extern "C" __global__ void raft_corr_dots_f16(const cvf_f16* __restrict__ f1, const cvf_f16* __restrict__ f2,
                                              const float* __restrict__ coords, cvf_f16* __restrict__ taps, int p0,
                                              int rows, int HW, int Hl, int Wl, int D, int r, float scale, float inv)
{
    raft_corr_dots_t(f1, f2, coords, taps, p0, rows, HW, Hl, Wl, D, r, scale, inv);
}

extern "C" __global__ void raft_corr_dots_bf16(const cvf_bf16* __restrict__ f1, const cvf_bf16* __restrict__ f2,
                                               const float* __restrict__ coords, cvf_bf16* __restrict__ taps, int p0,
                                               int rows, int HW, int Hl, int Wl, int D, int r, float scale, float inv)
{
    raft_corr_dots_t(f1, f2, coords, taps, p0, rows, HW, Hl, Wl, D, r, scale, inv);
}

extern "C" __global__ void raft_corr_interp(const float* __restrict__ taps, const float* __restrict__ coords,
                                            float* __restrict__ out, int p0, int rows, int Hl, int Wl, int r,
                                            int level, int levels, float scale)
{
    raft_corr_interp_t(taps, coords, out, p0, rows, Hl, Wl, r, level, levels, scale);
}

extern "C" __global__ void raft_corr_interp_f16(const cvf_f16* __restrict__ taps, const float* __restrict__ coords,
                                                cvf_f16* __restrict__ out, int p0, int rows, int Hl, int Wl, int r,
                                                int level, int levels, float scale)
{
    raft_corr_interp_t(taps, coords, out, p0, rows, Hl, Wl, r, level, levels, scale);
}

extern "C" __global__ void raft_corr_interp_bf16(const cvf_bf16* __restrict__ taps, const float* __restrict__ coords,
                                                 cvf_bf16* __restrict__ out, int p0, int rows, int Hl, int Wl, int r,
                                                 int level, int levels, float scale)
{
    raft_corr_interp_t(taps, coords, out, p0, rows, Hl, Wl, r, level, levels, scale);
}

extern "C" __global__ void raft_corr_lookup4(const float* __restrict__ vol0, const float* __restrict__ vol1,
                                             const float* __restrict__ vol2, const float* __restrict__ vol3,
                                             const float* __restrict__ coords, float* __restrict__ out, int P, int H0,
                                             int W0, int H1, int W1, int H2, int W2, int H3, int W3, int r)
{
    raft_corr_lookup4_t(vol0, vol1, vol2, vol3, coords, out, P, H0, W0, H1, W1, H2, W2, H3, W3, r);
}

extern "C" __global__ void raft_corr_lookup4_f16(const cvf_f16* __restrict__ vol0, const cvf_f16* __restrict__ vol1,
                                                 const cvf_f16* __restrict__ vol2, const cvf_f16* __restrict__ vol3,
                                                 const float* __restrict__ coords, cvf_f16* __restrict__ out, int P,
                                                 int H0, int W0, int H1, int W1, int H2, int W2, int H3, int W3,
                                                 int r)
{
    raft_corr_lookup4_t(vol0, vol1, vol2, vol3, coords, out, P, H0, W0, H1, W1, H2, W2, H3, W3, r);
}

extern "C" __global__ void raft_corr_lookup4_bf16(const cvf_bf16* __restrict__ vol0,
                                                  const cvf_bf16* __restrict__ vol1,
                                                  const cvf_bf16* __restrict__ vol2,
                                                  const cvf_bf16* __restrict__ vol3, const float* __restrict__ coords,
                                                  cvf_bf16* __restrict__ out, int P, int H0, int W0, int H1, int W1,
                                                  int H2, int W2, int H3, int W3, int r)
{
    raft_corr_lookup4_t(vol0, vol1, vol2, vol3, coords, out, P, H0, W0, H1, W1, H2, W2, H3, W3, r);
}
