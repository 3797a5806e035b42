// Element-wise arithmetic of the Transformer glue (residual sums, position encodings,
// flow updates and scaling), one element per thread, rounded as NumPy's float32 ops.

// out[i] = a[i] + b[i % period] (b broadcast over leading axes; period = b's size).
extern "C" __global__ void add_bcast(const float* __restrict__ a, const float* __restrict__ b,
                                     float* __restrict__ out, int total, int period)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    out[i] = __fadd_rn(a[i], b[i % period]);
}

// out[i] = a[i] * alpha.
extern "C" __global__ void scale(const float* __restrict__ a, float* __restrict__ out, int total, float alpha)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    out[i] = __fmul_rn(a[i], alpha);
}

// out[i] = min(max(a[i], lo), hi) (hardtanh).
extern "C" __global__ void clamp(const float* __restrict__ a, float* __restrict__ out, int total, float lo,
                                 float hi)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    out[i] = fminf(fmaxf(a[i], lo), hi);
}
