// Array glue as kernels, so that a pass is executor calls only (a CUDA graph holds
// nothing else): strided copies (views made contiguous, channel slices, crops,
// concatenation into a slice of the destination), element-wise sums, differences and
// scalings. NumPy's rounding: separate float32 operations, no FMA. One element per thread.
// T: float, or kernels/dtype.h's half storage (<name>_f16 / <name>_bf16) for every array,
// layer scales included (weights are stored in half too); the scalar factors of `scale`
// stay float. Values are loaded to float, computed in float, rounded once on store.

// dst[doff + sum_k i_k * ds_k] = act(src[soff + sum_k i_k * ss_k]) over the 4-D index
// (i0, i1, i2, i3) < (n0, n1, n2, n3); strides in elements. act: 0 none, 1 ReLU, 3 tanh.
template <typename T>
__device__ __forceinline__ void strided_copy_t(const T* __restrict__ src, T* __restrict__ dst, int soff, int doff,
                                               int n0, int n1, int n2, int n3, int ss0, int ss1, int ss2, int ss3,
                                               int ds0, int ds1, int ds2, int ds3, int act)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n0 * n1 * n2 * n3) return;
    int i3 = i % n3;
    int i2 = (i / n3) % n2;
    int i1 = (i / (n3 * n2)) % n1;
    int i0 = i / (n3 * n2 * n1);
    T* d = dst + (long long)doff + (long long)i0 * ds0 + (long long)i1 * ds1 + (long long)i2 * ds2
           + (long long)i3 * ds3;
    T s = src[(long long)soff + (long long)i0 * ss0 + (long long)i1 * ss1 + (long long)i2 * ss2 + (long long)i3 * ss3];
    if (act == 0) {  // a copy moves the stored bits (no round trip through float)
        *d = s;
        return;
    }
    float v = cvf_f32(s);
    if (act == 1) v = v > 0.0f ? v : 0.0f;
    else if (act == 3) v = tanhf(v);
    *d = cvf_from_f32<T>(v);
}

// out = a + b (op 0), a - b (op 1), a * b (op 2); b has `inner` elements repeated along
// a (inner = total: the same shape; inner = C: a per-channel vector).
template <typename T>
__device__ __forceinline__ void binary_t(const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ out,
                                         int total, int inner, int op)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    float x = cvf_f32(a[i]), y = cvf_f32(b[i % inner]);
    out[i] = cvf_from_f32<T>(op == 0 ? __fadd_rn(x, y) : (op == 1 ? __fsub_rn(x, y) : __fmul_rn(x, y)));
}

// out = x * s, or x / s when divide (true division, as NumPy's x / s); s = sy for channel 1
// of a 2-channel map (a flow's dy) and sx for every other element.
template <typename T>
__device__ __forceinline__ void scale_t(const T* __restrict__ x, T* __restrict__ out, int total, int C, float sx,
                                        float sy, int divide)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    float s = (C == 2 && (i & 1)) ? sy : sx;
    float v = cvf_f32(x[i]);
    out[i] = cvf_from_f32<T>(divide ? __fdiv_rn(v, s) : __fmul_rn(v, s));
}

// out = x + g[c] * y (c = i % C): ConvNeXt's layer scale on the residual branch.
template <typename T>
__device__ __forceinline__ void add_scaled_t(const T* __restrict__ x, const T* __restrict__ g,
                                             const T* __restrict__ y, T* __restrict__ out, int total, int C)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    out[i] = cvf_from_f32<T>(__fadd_rn(cvf_f32(x[i]), __fmul_rn(cvf_f32(g[i % C]), cvf_f32(y[i]))));
}

extern "C" __global__ void strided_copy(const float* __restrict__ src, float* __restrict__ dst, int soff, int doff,
                                        int n0, int n1, int n2, int n3, int ss0, int ss1, int ss2, int ss3, int ds0,
                                        int ds1, int ds2, int ds3, int act)
{
    strided_copy_t(src, dst, soff, doff, n0, n1, n2, n3, ss0, ss1, ss2, ss3, ds0, ds1, ds2, ds3, act);
}

extern "C" __global__ void strided_copy_f16(const cvf_f16* __restrict__ src, cvf_f16* __restrict__ dst, int soff,
                                            int doff, int n0, int n1, int n2, int n3, int ss0, int ss1, int ss2,
                                            int ss3, int ds0, int ds1, int ds2, int ds3, int act)
{
    strided_copy_t(src, dst, soff, doff, n0, n1, n2, n3, ss0, ss1, ss2, ss3, ds0, ds1, ds2, ds3, act);
}

extern "C" __global__ void strided_copy_bf16(const cvf_bf16* __restrict__ src, cvf_bf16* __restrict__ dst, int soff,
                                             int doff, int n0, int n1, int n2, int n3, int ss0, int ss1, int ss2,
                                             int ss3, int ds0, int ds1, int ds2, int ds3, int act)
{
    strided_copy_t(src, dst, soff, doff, n0, n1, n2, n3, ss0, ss1, ss2, ss3, ds0, ds1, ds2, ds3, act);
}

extern "C" __global__ void binary(const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ out,
                                  int total, int inner, int op)
{
    binary_t(a, b, out, total, inner, op);
}

extern "C" __global__ void binary_f16(const cvf_f16* __restrict__ a, const cvf_f16* __restrict__ b,
                                      cvf_f16* __restrict__ out, int total, int inner, int op)
{
    binary_t(a, b, out, total, inner, op);
}

extern "C" __global__ void binary_bf16(const cvf_bf16* __restrict__ a, const cvf_bf16* __restrict__ b,
                                       cvf_bf16* __restrict__ out, int total, int inner, int op)
{
    binary_t(a, b, out, total, inner, op);
}

extern "C" __global__ void scale(const float* __restrict__ x, float* __restrict__ out, int total, int C, float sx,
                                 float sy, int divide)
{
    scale_t(x, out, total, C, sx, sy, divide);
}

extern "C" __global__ void scale_f16(const cvf_f16* __restrict__ x, cvf_f16* __restrict__ out, int total, int C,
                                     float sx, float sy, int divide)
{
    scale_t(x, out, total, C, sx, sy, divide);
}

extern "C" __global__ void scale_bf16(const cvf_bf16* __restrict__ x, cvf_bf16* __restrict__ out, int total, int C,
                                      float sx, float sy, int divide)
{
    scale_t(x, out, total, C, sx, sy, divide);
}

extern "C" __global__ void add_scaled(const float* __restrict__ x, const float* __restrict__ g,
                                      const float* __restrict__ y, float* __restrict__ out, int total, int C)
{
    add_scaled_t(x, g, y, out, total, C);
}

extern "C" __global__ void add_scaled_f16(const cvf_f16* __restrict__ x, const cvf_f16* __restrict__ g,
                                          const cvf_f16* __restrict__ y, cvf_f16* __restrict__ out, int total, int C)
{
    add_scaled_t(x, g, y, out, total, C);
}

extern "C" __global__ void add_scaled_bf16(const cvf_bf16* __restrict__ x, const cvf_bf16* __restrict__ g,
                                           const cvf_bf16* __restrict__ y, cvf_bf16* __restrict__ out, int total,
                                           int C)
{
    add_scaled_t(x, g, y, out, total, C);
}
