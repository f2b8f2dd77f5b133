// Helpers shared by the kernels. No #include on purpose: the engine compiles these sources with
// NVRTC through CuPy, where no CUDA include path is guaranteed (a pip-installed CUDA has none), so
// bfloat16 is handled as its raw 16-bit pattern instead of through cuda_bf16.h.
// engine/kernels.py pastes this file in place of the #include line, so CuPy's kernel cache (keyed
// by source text) sees every change to it.

typedef unsigned short bf16_t;  // raw bfloat16 bits, what a torch.bfloat16 tensor stores

#define IDX_NONE 0x7fffffff

__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(bf16_t x) { return __uint_as_float(((unsigned int)x) << 16); }

// Round to the storage type, nearest-even, exactly as c10::BFloat16 does (NaN becomes 0x7fc0).
__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(bf16_t* p, float v) {
    unsigned int u = __float_as_uint(v);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        *p = (bf16_t)0x7fc0;
        return;
    }
    u += 0x7fffu + ((u >> 16) & 1u);
    *p = (bf16_t)(u >> 16);
}

// The value a torch op on dtype T produces: computed in float, then rounded to T.
template <typename T> __device__ __forceinline__ float round_as(float v);
template <> __device__ __forceinline__ float round_as<float>(float v) { return v; }
template <> __device__ __forceinline__ float round_as<bf16_t>(float v) {
    bf16_t h;
    store(&h, v);
    return to_float(h);
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Sum over the block, returned to every thread. blockDim.x must be a multiple of 32.
__device__ __forceinline__ float block_sum(float v) {
    __shared__ float partial[32];
    __shared__ float total;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_sum(v);
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < (int)(blockDim.x >> 5) ? partial[lane] : 0.f;
        v = warp_sum(v);
        if (lane == 0) total = v;
    }
    __syncthreads();
    return total;
}
