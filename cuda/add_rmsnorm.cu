// Residual add + RMSNorm in one launch (per transformer block this replaces ~8 small torch ops):
//   residual_out = x + residual                       (rounded to the tensor dtype, as torch does)
//   out = weight * to_dtype(residual_out * rsqrt(mean(residual_out^2) + eps))
// matching engine/model.py RMSNorm applied to x + residual. One block per row (token).
#include "common.cuh"

template <typename T>
__device__ void add_rmsnorm_rows(const T* x, const T* residual, const T* weight, T* out,
                                 T* residual_out, int dim, float eps) {
    long long off = (long long)blockIdx.x * dim;
    float ss = 0.f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float r = round_as<T>(to_float(x[off + i]) + to_float(residual[off + i]));
        store(residual_out + off + i, r);
        ss += r * r;
    }
    float rstd = rsqrtf(block_sum(ss) / dim + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float normed = round_as<T>(to_float(residual_out[off + i]) * rstd);  // written by this thread
        store(out + off + i, normed * to_float(weight[i]));
    }
}

extern "C" __global__ void add_rmsnorm_f32(const float* x, const float* residual,
                                           const float* weight, float* out, float* residual_out,
                                           int dim, float eps) {
    add_rmsnorm_rows<float>(x, residual, weight, out, residual_out, dim, eps);
}

extern "C" __global__ void add_rmsnorm_bf16(const bf16_t* x, const bf16_t* residual,
                                            const bf16_t* weight, bf16_t* out,
                                            bf16_t* residual_out, int dim, float eps) {
    add_rmsnorm_rows<bf16_t>(x, residual, weight, out, residual_out, dim, eps);
}
