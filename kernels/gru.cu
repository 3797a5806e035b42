// RAFT's GRU gate arithmetic, fused: two passes per cell instead of thirteen array ops
// (cvflow/ops/gru.py `_step`, the same operations in the same order). Rows p of P
// pixels; g (P, 3Ch) the input's share of the z, r, q pre-activations, c (Pc, 3Ch) the
// constant share with the biases (Pc = 1: one bias row for every pixel), hzr (P, 2Ch)
// the state's share of z and r. z and r rows are pre-halved: sigmoid(a) = (tanh(a/2)+1)/2.
// __fadd_rn/__fmul_rn: rounded as NumPy's separate passes (no FMA).

// zr[p, j] = sigmoid of z (j < Ch) and r (j >= Ch); rh[p, k] = r[p, k] * h[p, k].
// hzr is read through a view: element (p, j) at hoff + p * hstride + j; has_hzr = 0: the
// state's share is already in g (one product of [h, x]), hzr unused.
extern "C" __global__ void gru_gates(const float* __restrict__ g, const float* __restrict__ c,
                                     const float* __restrict__ hzr, const float* __restrict__ h,
                                     float* __restrict__ zr, float* __restrict__ rh, int P, int Ch, int Pc,
                                     int has_hzr, int hoff, int hstride)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= P * 2 * Ch) return;
    int j = i % (2 * Ch);
    int p = i / (2 * Ch);
    const float* crow = c + (long long)(Pc == 1 ? 0 : p) * 3 * Ch;
    float t = __fadd_rn(g[(long long)p * 3 * Ch + j], crow[j]);
    if (has_hzr) t = __fadd_rn(t, hzr[hoff + (long long)p * hstride + j]);
    t = __fmul_rn(__fadd_rn(tanhf(t), 1.0f), 0.5f);
    zr[i] = t;
    if (j >= Ch) rh[(long long)p * Ch + j - Ch] = __fmul_rn(t, h[(long long)p * Ch + j - Ch]);
}

// out = (1 - z) * h + z * tanh(q + (g_q + c_q)), q (P, Ch) the conv of r * h.
extern "C" __global__ void gru_blend(const float* __restrict__ q, const float* __restrict__ g,
                                     const float* __restrict__ c, const float* __restrict__ zr,
                                     const float* __restrict__ h, float* __restrict__ out, int P, int Ch, int Pc)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= P * Ch) return;
    int k = i % Ch;
    int p = i / Ch;
    const float* crow = c + (long long)(Pc == 1 ? 0 : p) * 3 * Ch;
    float t = tanhf(__fadd_rn(q[i], __fadd_rn(g[(long long)p * 3 * Ch + 2 * Ch + k], crow[2 * Ch + k])));
    float z = zr[(long long)p * 2 * Ch + k];
    float o = __fmul_rn(__fsub_rn(1.0f, z), h[i]);
    out[i] = __fadd_rn(o, __fmul_rn(t, z));
}
