// lucidd's CUDA kernels for the encoder: everything between the cuBLAS GEMMs.
//
// Compiled at start-up by NVRTC (no host compiler, no CUDA headers: NVRTC's built-ins
// only) and cached by (source hash, GPU arch). Row-major f32 throughout; a batch is
// padded to T tokens per sequence with `lengths` giving each sequence's real length.
// Block sizes are fixed at 256 threads (8 warps); every reduction is warp shuffles plus
// one shared-memory pass.

#define THREADS 256
#define WARPS (THREADS / 32)
#define NEG_INF (-__int_as_float(0x7f800000))

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum (or maximum, when MAX) over the block; every thread gets the result. `scratch`
// holds WARPS floats.
template <bool MAX>
__device__ __forceinline__ float block_reduce(float v, float* scratch) {
    v = MAX ? warp_max(v) : warp_sum(v);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < WARPS ? scratch[lane] : (MAX ? NEG_INF : 0.0f);
    return MAX ? warp_max(v) : warp_sum(v);
}

__device__ __forceinline__ float block_sum(float v, float* scratch) { return block_reduce<false>(v, scratch); }
__device__ __forceinline__ float block_max(float v, float* scratch) { return block_reduce<true>(v, scratch); }

// Normalises row `x` (width n) in place with gamma/beta; one block per row.
__device__ __forceinline__ void layernorm_row(float* x, const float* gamma, const float* beta, int n, float eps, float* scratch) {
    float s = 0.0f;
    for (int i = threadIdx.x; i < n; i += THREADS) s += x[i];
    const float mean = block_sum(s, scratch) / n;
    float v = 0.0f;
    for (int i = threadIdx.x; i < n; i += THREADS) { const float d = x[i] - mean; v += d * d; }
    const float inv = rsqrtf(block_sum(v, scratch) / n + eps);
    for (int i = threadIdx.x; i < n; i += THREADS) x[i] = (x[i] - mean) * inv * gamma[i] + beta[i];
}

// out[row] = LayerNorm(word[id] + pos[offset + t] + type0). Grid: B*T rows; padded rows
// (t >= lengths[b]) are written as zeros.
extern "C" __global__ void embed_layernorm(
    float* out, const unsigned int* ids, const int* lengths, int T,
    const float* word, const float* pos, const float* type0, int position_offset,
    const float* gamma, const float* beta, int n, float eps) {
    __shared__ float scratch[WARPS];
    const int row = blockIdx.x, b = row / T, t = row % T;
    float* x = out + (size_t)row * n;
    if (t >= lengths[b]) {
        for (int i = threadIdx.x; i < n; i += THREADS) x[i] = 0.0f;
        return;
    }
    const float* w = word + (size_t)ids[row] * n;
    const float* p = pos ? pos + (size_t)(position_offset + t) * n : 0;
    for (int i = threadIdx.x; i < n; i += THREADS) {
        float v = w[i];
        if (p) v += p[i];
        if (type0) v += type0[i];
        x[i] = v;
    }
    __syncthreads();
    layernorm_row(x, gamma, beta, n, eps, scratch);
}

// x = x + bias (broadcast over rows); x is rows x n.
extern "C" __global__ void bias_add(float* x, const float* bias, long long total, int n) {
    for (long long i = (long long)blockIdx.x * THREADS + threadIdx.x; i < total; i += (long long)gridDim.x * THREADS) {
        x[i] += bias[i % n];
    }
}

// x = gelu(x + bias), exact (erf) form; x is rows x n.
extern "C" __global__ void bias_gelu(float* x, const float* bias, long long total, int n) {
    for (long long i = (long long)blockIdx.x * THREADS + threadIdx.x; i < total; i += (long long)gridDim.x * THREADS) {
        const float v = x[i] + bias[i % n];
        x[i] = 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    }
}

// x = LayerNorm(x + bias + residual); one block per row.
extern "C" __global__ void bias_residual_layernorm(
    float* x, const float* bias, const float* residual, const float* gamma, const float* beta, int n, float eps) {
    __shared__ float scratch[WARPS];
    float* r = x + (size_t)blockIdx.x * n;
    const float* res = residual + (size_t)blockIdx.x * n;
    for (int i = threadIdx.x; i < n; i += THREADS) r[i] += bias[i] + res[i];
    __syncthreads();
    layernorm_row(r, gamma, beta, n, eps, scratch);
}

// DeBERTa's disentangled terms added to raw attention scores before the softmax.
// scores: [B*H, T, T]; c2p/p2c: [B*H, T, 2*span] (query/key against projected relative
// embeddings; either may be null); index[d + W - 1]: clamped bucket row of distance
// d = i - j, built once at load for the model's W positions (the bucketing is odd, so
// p2c reads the same row). Grid: B*H*T rows.
extern "C" __global__ void deberta_relative_bias(
    float* scores, const float* c2p, const float* p2c, const int* index, int W, int T, int span2) {
    const int row = blockIdx.x, bh = row / T, i = row % T;
    float* s = scores + (size_t)row * T;
    const float* c = c2p ? c2p + ((size_t)bh * T + i) * span2 : 0;
    for (int j = threadIdx.x; j < T; j += THREADS) {
        const int r = index[i - j + W - 1];
        float add = 0.0f;
        if (c) add += c[r];
        if (p2c) add += p2c[((size_t)bh * T + j) * span2 + r];
        s[j] += add;
    }
}

// Softmax over each row of scores [B*H, T, T] after scaling, with key positions at or
// beyond the sequence's length masked out (and padded query rows zeroed). Grid: B*H*T.
extern "C" __global__ void masked_softmax(float* scores, const int* lengths, int heads, int T, float scale) {
    __shared__ float scratch[WARPS];
    const int row = blockIdx.x, b = row / (heads * T), i = row % T, len = lengths[b];
    float* s = scores + (size_t)row * T;
    if (i >= len) {
        for (int j = threadIdx.x; j < T; j += THREADS) s[j] = 0.0f;
        return;
    }
    float m = NEG_INF;
    for (int j = threadIdx.x; j < len; j += THREADS) m = fmaxf(m, s[j] * scale);
    m = block_max(m, scratch);
    float sum = 0.0f;
    for (int j = threadIdx.x; j < T; j += THREADS) {
        const float e = j < len ? __expf(s[j] * scale - m) : 0.0f;
        s[j] = e;
        sum += e;
    }
    const float inv = 1.0f / block_sum(sum, scratch);
    for (int j = threadIdx.x; j < len; j += THREADS) s[j] *= inv;
}

// pooled[b] = first token, or the mean over the sequence's tokens (L2-normalised when
// `normalize`). hidden: [B, T, n]. Grid: B.
extern "C" __global__ void pool(float* pooled, const float* hidden, const int* lengths, int T, int n, int mean, int normalize) {
    __shared__ float scratch[WARPS];
    const int b = blockIdx.x, len = lengths[b];
    const float* h = hidden + (size_t)b * T * n;
    float* out = pooled + (size_t)b * n;
    float sq = 0.0f;
    for (int i = threadIdx.x; i < n; i += THREADS) {
        float v;
        if (mean) {
            v = 0.0f;
            for (int t = 0; t < len; ++t) v += h[(size_t)t * n + i];
            v /= (float)max(len, 1);
        } else {
            v = h[i];
        }
        out[i] = v;
        sq += v * v;
    }
    if (normalize) {
        const float inv = 1.0f / fmaxf(sqrtf(block_sum(sq, scratch)), 1e-12f);
        for (int i = threadIdx.x; i < n; i += THREADS) out[i] *= inv;
    }
}

// Every head of every sequence in one launch: logits = W_h pooled_b + b_h, then softmax
// or sigmoid. Heads are laid end to end: head h has labels[h] rows of W starting at row
// first[h]; act[h] is 0 (softmax) or 1 (sigmoid). Outputs per (sequence, label row):
// logits and probs. (Thresholds are the auditors', which read the probabilities.)
// Grid: (B, heads); one warp per label row.
extern "C" __global__ void score_heads(
    float* logits_out, float* probs, const float* pooled, int n,
    const float* weight, const float* bias, const int* first, const int* labels, const int* act,
    int total_labels) {
    __shared__ float logits[WARPS * 4];
    __shared__ float scratch[WARPS];
    const int b = blockIdx.x, h = blockIdx.y, k0 = first[h], L = labels[h];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const float* x = pooled + (size_t)b * n;
    for (int k = warp; k < L && k < WARPS * 4; k += WARPS) {
        const float* w = weight + (size_t)(k0 + k) * n;
        float s = 0.0f;
        for (int i = lane; i < n; i += 32) s += w[i] * x[i];
        s = warp_sum(s);
        if (lane == 0) logits[k] = s + bias[k0 + k];
    }
    __syncthreads();
    const int k = threadIdx.x;
    const int labels_here = min(L, WARPS * 4);  // the host refuses heads with more
    float v = k < labels_here ? logits[k] : NEG_INF;
    float p;
    if (act[h] == 0) {
        const float m = block_max(v, scratch);
        const float e = k < L ? __expf(v - m) : 0.0f;
        p = e / block_sum(e, scratch);
    } else {
        p = 1.0f / (1.0f + __expf(-v));
    }
    if (k < labels_here) {
        const size_t o = (size_t)b * total_labels + k0 + k;
        logits_out[o] = v;
        probs[o] = p;
    }
}
