// Fused confidence: one pass over a row of vocabulary logits per masked position (online softmax),
// giving the argmax token, its probability, and optionally the entropy and the top-2 margin.
// No probability tensor is written. One block per row; any vocabulary size.
//
// Conventions shared with the torch reference (engine/kernels.py):
// - ties: the lowest index wins, as torch.argmax does;
// - -inf logits have probability 0; a row of only -inf gives token 0, prob 0, entropy 0, margin 0;
// - NaN and +inf logits are outside the contract.
#include "common.cuh"

struct Conf {
    float m;   // largest logit so far
    float s;   // sum of exp(x - m)
    float t;   // sum of exp(x - m) * (x - m): entropy = log(s) - t / s
    float v2;  // second-largest logit (equals m when the maximum is tied)
    int idx;   // first index holding m; IDX_NONE while only -inf was seen
};

// Move the sums from base m_old to base m_new >= m_old; empty sums stay empty (avoids -inf * 0).
__device__ __forceinline__ void rebase(float& s, float& t, float m_old, float m_new) {
    if (s > 0.f) {
        float d = m_old - m_new;
        float f = expf(d);
        t = f * (t + d * s);
        s = f * s;
    }
}

__device__ __forceinline__ Conf merge(Conf a, Conf b) {
    Conf r;
    r.m = fmaxf(a.m, b.m);
    r.idx = a.m > b.m ? a.idx : (b.m > a.m ? b.idx : min(a.idx, b.idx));
    r.v2 = fmaxf(fmaxf(a.v2, b.v2), fminf(a.m, b.m));
    rebase(a.s, a.t, a.m, r.m);
    rebase(b.s, b.t, b.m, r.m);
    r.s = a.s + b.s;
    r.t = a.t + b.t;
    return r;
}

__device__ __forceinline__ Conf shfl_xor(Conf c, int o) {
    Conf r;
    r.m = __shfl_xor_sync(0xffffffffu, c.m, o);
    r.s = __shfl_xor_sync(0xffffffffu, c.s, o);
    r.t = __shfl_xor_sync(0xffffffffu, c.t, o);
    r.v2 = __shfl_xor_sync(0xffffffffu, c.v2, o);
    r.idx = __shfl_xor_sync(0xffffffffu, c.idx, o);
    return r;
}

// One logit into the running state.
__device__ __forceinline__ void visit(Conf& c, float x, int i) {
    if (x > c.m) {
        rebase(c.s, c.t, c.m, x);
        c.v2 = c.m;
        c.m = x;
        c.idx = i;
    } else if (x > c.v2) {
        c.v2 = x;
    }
    if (x > neg_inf()) {
        float d = x - c.m;
        float e = expf(d);
        c.s += e;
        c.t += e * d;
    }
}

// 16 bytes of logits at once: 4 floats or 8 bfloat16 (the lower half of a word comes first).
template <typename T> struct Chunk;
template <> struct Chunk<float> { static const int N = 4; };
template <> struct Chunk<bf16_t> { static const int N = 8; };

__device__ __forceinline__ void load_chunk(const float* p, float* out) {
    float4 v = *reinterpret_cast<const float4*>(p);
    out[0] = v.x; out[1] = v.y; out[2] = v.z; out[3] = v.w;
}
__device__ __forceinline__ void load_chunk(const bf16_t* p, float* out) {
    uint4 v = *reinterpret_cast<const uint4*>(p);
    unsigned int w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        out[2 * j] = __uint_as_float(w[j] << 16);
        out[2 * j + 1] = __uint_as_float(w[j] & 0xffff0000u);
    }
}

// logits row r lives at (r / rows_b) * stride_a + (r % rows_b) * stride_b: a (A, B, V) view whose
// last dimension is contiguous, e.g. the middle slice of (batch, length, vocab) logits.
template <typename T>
__device__ void confidence_rows(const T* logits, long long stride_a, long long stride_b, int rows_b,
                                int vocab, long long* token, float* prob, float* entropy,
                                float* margin, int want_extra) {
    __shared__ Conf partial[32];
    int r = blockIdx.x;
    const T* row = logits + (long long)(r / rows_b) * stride_a + (long long)(r % rows_b) * stride_b;

    // Each thread visits its indices in increasing order, so a strict > keeps the first maximum.
    // 16-byte loads where the row is aligned (the common case), then the tail one by one.
    Conf c = {neg_inf(), 0.f, 0.f, neg_inf(), IDX_NONE};
    const int n = Chunk<T>::N;
    int chunks = ((unsigned long long)row % 16 == 0) ? vocab / n : 0;
    for (int k = threadIdx.x; k < chunks; k += blockDim.x) {
        float v[n];
        load_chunk(row + (long long)k * n, v);
#pragma unroll
        for (int j = 0; j < n; ++j) visit(c, v[j], k * n + j);
    }
    for (int i = chunks * n + threadIdx.x; i < vocab; i += blockDim.x) visit(c, to_float(row[i]), i);

    for (int o = 16; o > 0; o >>= 1) c = merge(c, shfl_xor(c, o));
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) partial[warp] = c;
    __syncthreads();
    if (warp != 0) return;
    if (lane < (int)(blockDim.x >> 5)) {
        c = partial[lane];
    } else {
        c.m = neg_inf(); c.s = 0.f; c.t = 0.f; c.v2 = neg_inf(); c.idx = IDX_NONE;
    }
    for (int o = 16; o > 0; o >>= 1) c = merge(c, shfl_xor(c, o));
    if (lane != 0) return;

    bool empty = !(c.s > 0.f);  // every logit was -inf
    token[r] = c.idx == IDX_NONE ? 0 : c.idx;
    prob[r] = empty ? 0.f : 1.f / c.s;
    if (want_extra) {
        entropy[r] = empty ? 0.f : fmaxf(0.f, logf(c.s) - c.t / c.s);
        margin[r] = empty ? 0.f : (1.f - expf(c.v2 - c.m)) / c.s;
    }
}

extern "C" __global__ void confidence_f32(const float* logits, long long stride_a, long long stride_b,
                                          int rows_b, int vocab, long long* token, float* prob,
                                          float* entropy, float* margin, int want_extra) {
    confidence_rows<float>(logits, stride_a, stride_b, rows_b, vocab, token, prob, entropy, margin,
                           want_extra);
}

extern "C" __global__ void confidence_bf16(const bf16_t* logits, long long stride_a,
                                           long long stride_b, int rows_b, int vocab,
                                           long long* token, float* prob, float* entropy,
                                           float* margin, int want_extra) {
    confidence_rows<bf16_t>(logits, stride_a, stride_b, rows_b, vocab, token, prob, entropy, margin,
                            want_extra);
}
