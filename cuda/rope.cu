// Rotary embedding on q and k in one launch, Hugging Face half-split layout (engine/model.py
// apply_rope): out = x * cos + cat(-x2, x1) * sin. Each op is rounded to the tensor dtype in the
// order torch evaluates it (no fused multiply-add), so results match the torch path bit for bit.
// q (B, Hq, L, D) and k (B, Hk, L, D) may be strided views (last dim contiguous); cos and sin are
// (B, 1, L, D) with any strides (0 where broadcast). Outputs are contiguous. One thread per pair.
#include "common.cuh"

template <typename T>
__device__ __forceinline__ void rotate_pair(const T* x, const T* c, const T* s, T* out, int half) {
    float x1 = to_float(x[0]), x2 = to_float(x[half]);
    float c1 = to_float(c[0]), c2 = to_float(c[half]);
    float s1 = to_float(s[0]), s2 = to_float(s[half]);
    float lo = __fadd_rn(round_as<T>(__fmul_rn(x1, c1)), round_as<T>(__fmul_rn(-x2, s1)));
    float hi = __fadd_rn(round_as<T>(__fmul_rn(x2, c2)), round_as<T>(__fmul_rn(x1, s2)));
    store(out, lo);
    store(out + half, hi);
}

template <typename T>
__device__ void rope_qk_all(const T* q, long long q0, long long q1, long long q2, int Hq,
                            const T* k, long long k0, long long k1, long long k2, int Hk,
                            const T* cos, long long cos0, long long cos2,
                            const T* sin, long long sin0, long long sin2,
                            T* q_out, T* k_out, int B, int L, int D) {
    int half = D / 2;
    long long n_q = (long long)B * Hq * L * half;
    long long n_all = n_q + (long long)B * Hk * L * half;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < n_all;
         e += (long long)gridDim.x * blockDim.x) {
        bool is_q = e < n_q;
        long long f = is_q ? e : e - n_q;
        int H = is_q ? Hq : Hk;
        int d = (int)(f % half);
        int l = (int)((f / half) % L);
        int h = (int)((f / ((long long)half * L)) % H);
        long long b = f / ((long long)half * L * H);
        const T* src = is_q ? q + b * q0 + h * q1 + l * q2 + d : k + b * k0 + h * k1 + l * k2 + d;
        T* dst = (is_q ? q_out : k_out) + ((b * H + h) * L + l) * D + d;
        rotate_pair<T>(src, cos + b * cos0 + l * cos2 + d, sin + b * sin0 + l * sin2 + d, dst, half);
    }
}

extern "C" __global__ void rope_qk_f32(const float* q, long long q0, long long q1, long long q2,
                                       int Hq, const float* k, long long k0, long long k1,
                                       long long k2, int Hk, const float* cos, long long cos0,
                                       long long cos2, const float* sin, long long sin0,
                                       long long sin2, float* q_out, float* k_out, int B, int L,
                                       int D) {
    rope_qk_all<float>(q, q0, q1, q2, Hq, k, k0, k1, k2, Hk, cos, cos0, cos2, sin, sin0, sin2,
                       q_out, k_out, B, L, D);
}

extern "C" __global__ void rope_qk_bf16(const bf16_t* q, long long q0, long long q1, long long q2,
                                        int Hq, const bf16_t* k, long long k0, long long k1,
                                        long long k2, int Hk, const bf16_t* cos, long long cos0,
                                        long long cos2, const bf16_t* sin, long long sin0,
                                        long long sin2, bf16_t* q_out, bf16_t* k_out, int B,
                                        int L, int D) {
    rope_qk_all<bf16_t>(q, q0, q1, q2, Hq, k, k0, k1, k2, Hk, cos, cos0, cos2, sin, sin0, sin2,
                        q_out, k_out, B, L, D);
}
