// RAFT's GRU gate arithmetic, fused: two passes per cell instead of thirteen array ops
// (cvflow/ops/gru.py `_step`, the same operations in the same order). Rows p of P
// pixels; g (P, 3Ch) the input's share of the z, r, q pre-activations, c (Pc, 3Ch) the
// constant share with the biases (Pc = 1: one bias row for every pixel), hzr (P, 2Ch)
// the state's share of z and r. z and r rows are pre-halved: sigmoid(a) = (tanh(a/2)+1)/2.
// __fadd_rn/__fmul_rn: rounded as NumPy's separate passes (no FMA).
// T: float, or kernels/dtype.h's half storage (<name>_f16 / <name>_bf16) for what lives
// between layers: g, c, hzr, h, r * h (a convolution's input), q and the new state. The
// gates zr stay float32 (an intermediate of the step, never stored as an activation), and
// the state update (1 - z) * h + z * tanh(q) is computed in float32, rounded once on store.

// zr[p, j] = sigmoid of z (j < Ch) and r (j >= Ch); rh[p, k] = r[p, k] * h[p, k].
// hzr is read through a view: element (p, j) at hoff + p * hstride + j; has_hzr = 0: the
// state's share is already in g (one product of [h, x]), hzr unused.
template <typename T>
__device__ __forceinline__ void gru_gates_t(const T* __restrict__ g, const T* __restrict__ c,
                                            const T* __restrict__ hzr, const T* __restrict__ h,
                                            float* __restrict__ zr, T* __restrict__ rh, int P, int Ch, int Pc,
                                            int has_hzr, int hoff, int hstride)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= P * 2 * Ch) return;
    int j = i % (2 * Ch);
    int p = i / (2 * Ch);
    const T* crow = c + (long long)(Pc == 1 ? 0 : p) * 3 * Ch;
    float t = __fadd_rn(cvf_f32(g[(long long)p * 3 * Ch + j]), cvf_f32(crow[j]));
    if (has_hzr) t = __fadd_rn(t, cvf_f32(hzr[hoff + (long long)p * hstride + j]));
    t = __fmul_rn(__fadd_rn(tanhf(t), 1.0f), 0.5f);
    zr[i] = t;
    if (j >= Ch)
        rh[(long long)p * Ch + j - Ch] = cvf_from_f32<T>(__fmul_rn(t, cvf_f32(h[(long long)p * Ch + j - Ch])));
}

// out = (1 - z) * h + z * tanh(q + (g_q + c_q)), q (P, Ch) the conv of r * h.
template <typename T>
__device__ __forceinline__ void gru_blend_t(const T* __restrict__ q, const T* __restrict__ g,
                                            const T* __restrict__ c, const float* __restrict__ zr,
                                            const T* __restrict__ h, T* __restrict__ out, int P, int Ch, int Pc)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= P * Ch) return;
    int k = i % Ch;
    int p = i / Ch;
    const T* crow = c + (long long)(Pc == 1 ? 0 : p) * 3 * Ch;
    float t = tanhf(__fadd_rn(cvf_f32(q[i]), __fadd_rn(cvf_f32(g[(long long)p * 3 * Ch + 2 * Ch + k]),
                                                       cvf_f32(crow[2 * Ch + k]))));
    float z = zr[(long long)p * 2 * Ch + k];
    float o = __fmul_rn(__fsub_rn(1.0f, z), cvf_f32(h[i]));
    out[i] = cvf_from_f32<T>(__fadd_rn(o, __fmul_rn(t, z)));
}

extern "C" __global__ void gru_gates(const float* __restrict__ g, const float* __restrict__ c,
                                     const float* __restrict__ hzr, const float* __restrict__ h,
                                     float* __restrict__ zr, float* __restrict__ rh, int P, int Ch, int Pc,
                                     int has_hzr, int hoff, int hstride)
{
    gru_gates_t(g, c, hzr, h, zr, rh, P, Ch, Pc, has_hzr, hoff, hstride);
}

extern "C" __global__ void gru_gates_f16(const cvf_f16* __restrict__ g, const cvf_f16* __restrict__ c,
                                         const cvf_f16* __restrict__ hzr, const cvf_f16* __restrict__ h,
                                         float* __restrict__ zr, cvf_f16* __restrict__ rh, int P, int Ch, int Pc,
                                         int has_hzr, int hoff, int hstride)
{
    gru_gates_t(g, c, hzr, h, zr, rh, P, Ch, Pc, has_hzr, hoff, hstride);
}

extern "C" __global__ void gru_gates_bf16(const cvf_bf16* __restrict__ g, const cvf_bf16* __restrict__ c,
                                          const cvf_bf16* __restrict__ hzr, const cvf_bf16* __restrict__ h,
                                          float* __restrict__ zr, cvf_bf16* __restrict__ rh, int P, int Ch, int Pc,
                                          int has_hzr, int hoff, int hstride)
{
    gru_gates_t(g, c, hzr, h, zr, rh, P, Ch, Pc, has_hzr, hoff, hstride);
}

extern "C" __global__ void gru_blend(const float* __restrict__ q, const float* __restrict__ g,
                                     const float* __restrict__ c, const float* __restrict__ zr,
                                     const float* __restrict__ h, float* __restrict__ out, int P, int Ch, int Pc)
{
    gru_blend_t(q, g, c, zr, h, out, P, Ch, Pc);
}

extern "C" __global__ void gru_blend_f16(const cvf_f16* __restrict__ q, const cvf_f16* __restrict__ g,
                                         const cvf_f16* __restrict__ c, const float* __restrict__ zr,
                                         const cvf_f16* __restrict__ h, cvf_f16* __restrict__ out, int P, int Ch,
                                         int Pc)
{
    gru_blend_t(q, g, c, zr, h, out, P, Ch, Pc);
}

extern "C" __global__ void gru_blend_bf16(const cvf_bf16* __restrict__ q, const cvf_bf16* __restrict__ g,
                                          const cvf_bf16* __restrict__ c, const float* __restrict__ zr,
                                          const cvf_bf16* __restrict__ h, cvf_bf16* __restrict__ out, int P, int Ch,
                                          int Pc)
{
    gru_blend_t(q, g, c, zr, h, out, P, Ch, Pc);
}
