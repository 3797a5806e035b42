// Point-wise activations, in place, one element per thread (cvflow/ops/act.py).
// GELU is the exact (erf) form, x * 0.5 * (1 + erf(x / sqrt(2))), as torch.nn.GELU().
// ReLU is x > 0 ? x : 0 (cv2.threshold's TOZERO); LeakyReLU is max(x, slope*x) for
// 0 <= slope <= 1. __fadd_rn/__fmul_rn: rounded as NumPy's separate passes (no FMA).
// T: float, or kernels/dtype.h's half storage (<name>_f16 / <name>_bf16) for the arrays,
// biases included (weights are stored in half); the slope stays a float scalar. Loaded to
// float, computed in float, rounded once on store.

// act: 0 none, 1 ReLU, 2 LeakyReLU(slope). bias (channels,) is added first when has_bias.
template <typename T>
__device__ __forceinline__ void bias_act_t(T* __restrict__ x, const T* __restrict__ bias, int total, int channels,
                                           int has_bias, int act, float slope)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    float v = cvf_f32(x[i]);
    if (has_bias) v = __fadd_rn(v, cvf_f32(bias[i % channels]));
    if (act == 1) v = v > 0.0f ? v : 0.0f;
    else if (act == 2) v = fmaxf(v, __fmul_rn(v, slope));
    x[i] = cvf_from_f32<T>(v);
}

// y = relu(y + x), in place on y.
template <typename T>
__device__ __forceinline__ void add_relu_t(T* __restrict__ y, const T* __restrict__ x, int total)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    float v = __fadd_rn(cvf_f32(y[i]), cvf_f32(x[i]));
    y[i] = cvf_from_f32<T>(v > 0.0f ? v : 0.0f);
}

// Exact GELU in place: x * (0.5 * (1 + erf(x * (1/sqrt(2))))).
template <typename T>
__device__ __forceinline__ void gelu_t(T* __restrict__ x, int total)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    float v = cvf_f32(x[i]);
    float e = erff(__fmul_rn(v, 0.70710678118654752f));
    x[i] = cvf_from_f32<T>(__fmul_rn(v, __fmul_rn(0.5f, __fadd_rn(1.0f, e))));
}

extern "C" __global__ void bias_act(float* __restrict__ x, const float* __restrict__ bias, int total, int channels,
                                    int has_bias, int act, float slope)
{
    bias_act_t(x, bias, total, channels, has_bias, act, slope);
}

extern "C" __global__ void bias_act_f16(cvf_f16* __restrict__ x, const cvf_f16* __restrict__ bias, int total,
                                        int channels, int has_bias, int act, float slope)
{
    bias_act_t(x, bias, total, channels, has_bias, act, slope);
}

extern "C" __global__ void bias_act_bf16(cvf_bf16* __restrict__ x, const cvf_bf16* __restrict__ bias, int total,
                                         int channels, int has_bias, int act, float slope)
{
    bias_act_t(x, bias, total, channels, has_bias, act, slope);
}

extern "C" __global__ void add_relu(float* __restrict__ y, const float* __restrict__ x, int total)
{
    add_relu_t(y, x, total);
}

extern "C" __global__ void add_relu_f16(cvf_f16* __restrict__ y, const cvf_f16* __restrict__ x, int total)
{
    add_relu_t(y, x, total);
}

extern "C" __global__ void add_relu_bf16(cvf_bf16* __restrict__ y, const cvf_bf16* __restrict__ x, int total)
{
    add_relu_t(y, x, total);
}

extern "C" __global__ void gelu(float* __restrict__ x, int total)
{
    gelu_t(x, total);
}

extern "C" __global__ void gelu_f16(cvf_f16* __restrict__ x, int total)
{
    gelu_t(x, total);
}

extern "C" __global__ void gelu_bf16(cvf_bf16* __restrict__ x, int total)
{
    gelu_t(x, total);
}
