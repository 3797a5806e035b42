// hardtanh: out[i] = min(max(a[i], lo), hi), one element per thread (NeuFlow v2's clamped
// iteration context; cvflow/backends/base.py hardtanh).
extern "C" __global__ void clamp(const float* __restrict__ a, float* __restrict__ out, int total, float lo,
                                 float hi)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    out[i] = fminf(fmaxf(a[i], lo), hi);
}
