// Point-wise activations, in place, one element per thread (cvflow/ops/act.py).
// GELU is the exact (erf) form, x * 0.5 * (1 + erf(x / sqrt(2))), as torch.nn.GELU().
// ReLU is x > 0 ? x : 0 (cv2.threshold's TOZERO); LeakyReLU is max(x, slope*x) for
// 0 <= slope <= 1. __fadd_rn/__fmul_rn: rounded as NumPy's separate passes (no FMA).

// act: 0 none, 1 ReLU, 2 LeakyReLU(slope). bias (channels,) is added first when has_bias.
extern "C" __global__ void bias_act(float* __restrict__ x, const float* __restrict__ bias, int total,
                                    int channels, int has_bias, int act, float slope)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    float v = x[i];
    if (has_bias) v = __fadd_rn(v, bias[i % channels]);
    if (act == 1) v = v > 0.0f ? v : 0.0f;
    else if (act == 2) v = fmaxf(v, __fmul_rn(v, slope));
    x[i] = v;
}

// y = relu(y + x), in place on y.
extern "C" __global__ void add_relu(float* __restrict__ y, const float* __restrict__ x, int total)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    float v = __fadd_rn(y[i], x[i]);
    y[i] = v > 0.0f ? v : 0.0f;
}

// Exact GELU in place: x * (0.5 * (1 + erf(x * (1/sqrt(2))))).
extern "C" __global__ void gelu(float* __restrict__ x, int total)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    float v = x[i];
    float e = erff(__fmul_rn(v, 0.70710678118654752f));
    x[i] = __fmul_rn(v, __fmul_rn(0.5f, __fadd_rn(1.0f, e)));
}
