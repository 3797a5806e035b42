// Array glue as kernels, so that a pass is executor calls only (a CUDA graph holds
// nothing else): strided copies (views made contiguous, channel slices, crops,
// concatenation into a slice of the destination), element-wise sums, differences and
// scalings. NumPy's rounding: separate float32 operations, no FMA. One element per thread.

// dst[doff + sum_k i_k * ds_k] = act(src[soff + sum_k i_k * ss_k]) over the 4-D index
// (i0, i1, i2, i3) < (n0, n1, n2, n3); strides in elements. act: 0 none, 1 ReLU, 3 tanh.
extern "C" __global__ void strided_copy(const float* __restrict__ src, float* __restrict__ dst, int soff, int doff,
                                        int n0, int n1, int n2, int n3, int ss0, int ss1, int ss2, int ss3,
                                        int ds0, int ds1, int ds2, int ds3, int act)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n0 * n1 * n2 * n3) return;
    int i3 = i % n3;
    int i2 = (i / n3) % n2;
    int i1 = (i / (n3 * n2)) % n1;
    int i0 = i / (n3 * n2 * n1);
    float v = src[(long long)soff + (long long)i0 * ss0 + (long long)i1 * ss1 + (long long)i2 * ss2
                  + (long long)i3 * ss3];
    if (act == 1) v = v > 0.0f ? v : 0.0f;
    else if (act == 3) v = tanhf(v);
    dst[(long long)doff + (long long)i0 * ds0 + (long long)i1 * ds1 + (long long)i2 * ds2 + (long long)i3 * ds3] = v;
}

// out = a + b (op 0), a - b (op 1), a * b (op 2); b has `inner` elements repeated along
// a (inner = total: the same shape; inner = C: a per-channel vector).
extern "C" __global__ void binary(const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ out,
                                  int total, int inner, int op)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    float x = a[i], y = b[i % inner];
    out[i] = op == 0 ? __fadd_rn(x, y) : (op == 1 ? __fsub_rn(x, y) : __fmul_rn(x, y));
}

// out = x * s.
extern "C" __global__ void scale(const float* __restrict__ x, float* __restrict__ out, int total, float s)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    out[i] = __fmul_rn(x[i], s);
}

// out = x + g[c] * y (c = i % C): ConvNeXt's layer scale on the residual branch.
extern "C" __global__ void add_scaled(const float* __restrict__ x, const float* __restrict__ g,
                                      const float* __restrict__ y, float* __restrict__ out, int total, int C)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    out[i] = __fadd_rn(x[i], __fmul_rn(g[i % C], y[i]));
}
