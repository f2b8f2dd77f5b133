// Commit step of the diffusion sampler, on the device: per row (sequence), among the positions
// still masked, commit the k most confident ones, where
//   k = all masked                                     if commit_all (budget-forced last step)
//   k = min(masked, max(min_commit, min(max_commit, #(prob >= threshold))))   otherwise,
// write their tokens into the canvas, clear their mask flags and output how many masks are left,
// so the host reads back one small (B,) vector per step. Equal confidences: the lower position
// goes first. One block per row; M (positions per row) must fit in shared memory (5 bytes each).
#include "common.cuh"

extern "C" __global__ void commit_tokens(
    long long* canvas, long long canvas_s0, long long canvas_s1,  // (B, M) view of the middle
    unsigned char* mask, long long mask_s0, long long mask_s1,    // (B, M) bool, 1 = still masked
    const long long* token, const float* prob,                    // (B, M) contiguous
    int M, float threshold,
    int min_commit, const int* min_commit_rows,      // per-row array, or null for the scalar
    int max_commit, const int* max_commit_rows,
    int commit_all, const unsigned char* commit_all_rows,
    int* masks_left) {                                // (B,)
    extern __shared__ float shared_prob[];
    unsigned char* shared_masked = (unsigned char*)(shared_prob + M);
    long long b = blockIdx.x;

    int n_masked = 0, n_pass = 0;
    for (int base = 0; base < M; base += blockDim.x) {
        int j = base + threadIdx.x;
        bool is_masked = false, passes = false;
        if (j < M) {
            is_masked = mask[b * mask_s0 + j * mask_s1] != 0;
            float p = prob[b * M + j];
            shared_prob[j] = p;
            shared_masked[j] = is_masked;
            passes = is_masked && p >= threshold;
        }
        // __syncthreads_count is also the barrier that publishes the shared arrays.
        n_masked += __syncthreads_count(is_masked);
        n_pass += __syncthreads_count(passes);
    }

    int lo = min_commit_rows ? min_commit_rows[b] : min_commit;
    int hi = max_commit_rows ? max_commit_rows[b] : max_commit;
    bool all = commit_all_rows ? commit_all_rows[b] != 0 : commit_all != 0;
    int k = all ? n_masked : min(n_masked, max(lo, min(hi, n_pass)));
    k = max(k, 0);

    for (int j = threadIdx.x; j < M; j += blockDim.x) {
        if (!shared_masked[j]) continue;
        float p = shared_prob[j];
        int rank = 0;  // masked positions that go before j
        for (int i = 0; i < M && rank < k; ++i)
            rank += shared_masked[i] && (shared_prob[i] > p || (shared_prob[i] == p && i < j));
        if (rank < k) {
            canvas[b * canvas_s0 + j * canvas_s1] = token[b * M + j];
            mask[b * mask_s0 + j * mask_s1] = 0;
        }
    }
    if (threadIdx.x == 0) masks_left[b] = n_masked - k;
}
