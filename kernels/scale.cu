// Scaling a map by constants (cvflow/backends/cuda/k_copy.py's `scale`): out = x * s, or
// x / s when divide (true division, as NumPy's x / s), s = sy for channel 1 of a
// 2-channel map (a flow's dy) and sx for every other element. One element per thread.
extern "C" __global__ void scale(const float* __restrict__ x, float* __restrict__ out, int total, int C, float sx,
                                 float sy, int divide)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    float s = (C == 2 && (i & 1)) ? sy : sx;
    out[i] = divide ? __fdiv_rn(x[i], s) : __fmul_rn(x[i], s);
}
