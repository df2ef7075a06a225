// CPU paged-attention decode kernel, loaded by cpu_paged_attention.py (see there for what it does and why).
//
// Layout of the work: one OpenMP task per sequence; for each 16-token group of its context, the scores of every
// query head (K read once, in place, from its block), then a softmax per head, then the weighted sum of V one
// kv head at a time.
#include "cpu_prelude.h"

#include <type_traits>

namespace {

constexpr int kMaxDim = 256;    // head_dim limit (checked by the caller)
constexpr int kMaxGroup = 16;   // query heads per kv head limit (checked by the caller)
constexpr int kMaxHeads = 256;  // query heads limit of the AVX-512 path (else the generic one)

// One (sequence, kv head): scores of the group's query heads against every context token, softmax, then the
// weighted sum of V. K and V rows are read once each, block by block, in place.
template <typename T>
void one_item(const T* q, const T* kc, const T* vc, const int32_t* table, int64_t len, T* out, int64_t h,
              int64_t G, int64_t KVH, int64_t D, int64_t block_size, float scale, float* scores) {
    alignas(64) float qf[kMaxGroup][kMaxDim];
    alignas(64) float acc[kMaxGroup][kMaxDim];
    alignas(64) float row[kMaxDim];
    for (int64_t g = 0; g < G; ++g) {
        const T* qg = q + (h * G + g) * D;
        for (int64_t d = 0; d < D; ++d) qf[g][d] = load(qg[d]) * scale;
    }
    const int64_t token_stride = KVH * D, block_stride = block_size * token_stride;
    const int64_t num_blocks = (len + block_size - 1) / block_size;
    for (int64_t blk = 0; blk < num_blocks; ++blk) {
        const T* base = kc + table[blk] * block_stride + h * D;
        const int64_t t0 = blk * block_size, n = len - t0 < block_size ? len - t0 : block_size;
        for (int64_t i = 0; i < n; ++i) {
            const T* kr = base + i * token_stride;
#pragma omp simd
            for (int64_t d = 0; d < D; ++d) row[d] = load(kr[d]);
            for (int64_t g = 0; g < G; ++g) {
                float s = 0.f;
#pragma omp simd reduction(+ : s)
                for (int64_t d = 0; d < D; ++d) s += qf[g][d] * row[d];
                scores[g * len + t0 + i] = s;
            }
        }
    }
    float inv[kMaxGroup];
    for (int64_t g = 0; g < G; ++g) {
        float* sg = scores + g * len;
        float m = sg[0];
        for (int64_t t = 1; t < len; ++t) m = sg[t] > m ? sg[t] : m;
        float sum = 0.f;
#pragma omp simd reduction(+ : sum)
        for (int64_t t = 0; t < len; ++t) {
            sg[t] = exp_nonpositive(sg[t] - m);
            sum += sg[t];
        }
        inv[g] = 1.f / sum;
        for (int64_t d = 0; d < D; ++d) acc[g][d] = 0.f;
    }
    for (int64_t blk = 0; blk < num_blocks; ++blk) {
        const T* base = vc + table[blk] * block_stride + h * D;
        const int64_t t0 = blk * block_size, n = len - t0 < block_size ? len - t0 : block_size;
        for (int64_t i = 0; i < n; ++i) {
            const T* vr = base + i * token_stride;
#pragma omp simd
            for (int64_t d = 0; d < D; ++d) row[d] = load(vr[d]);
            for (int64_t g = 0; g < G; ++g) {
                const float p = scores[g * len + t0 + i];
#pragma omp simd
                for (int64_t d = 0; d < D; ++d) acc[g][d] += p * row[d];
            }
        }
    }
    for (int64_t g = 0; g < G; ++g) {
        T* og = out + (h * G + g) * D;
        for (int64_t d = 0; d < D; ++d) store(og + d, acc[g][d] * inv[g]);
    }
}

#ifdef __AVX512F__
// Sum each of 16 vectors: lane i of the result is the sum of v[i]. A transpose-and-add tree, 15 shuffle pairs
// for 16 sums instead of a 16-lane horizontal reduction per sum (that was a third of the kernel's time).
inline __m512 reduce16(__m512* v) {
    for (int k = 0; k < 8; ++k)
        v[k] = _mm512_add_ps(_mm512_shuffle_f32x4(v[k], v[k + 8], 0x44), _mm512_shuffle_f32x4(v[k], v[k + 8], 0xEE));
    for (int k = 0; k < 4; ++k)
        v[k] = _mm512_add_ps(_mm512_shuffle_f32x4(v[k], v[k + 4], 0x88), _mm512_shuffle_f32x4(v[k], v[k + 4], 0xDD));
    for (int k = 0; k < 2; ++k)
        v[k] = _mm512_add_ps(_mm512_shuffle_ps(v[k], v[k + 2], 0x44), _mm512_shuffle_ps(v[k], v[k + 2], 0xEE));
    const __m512 r = _mm512_add_ps(_mm512_shuffle_ps(v[0], v[1], 0x88), _mm512_shuffle_ps(v[0], v[1], 0xDD));
    // the tree leaves the sums in lane order 0 2 1 3 8 10 9 11 4 6 5 7 12 14 13 15 (its own inverse)
    return _mm512_permutexvar_ps(_mm512_setr_epi32(0, 2, 1, 3, 8, 10, 9, 11, 4, 6, 5, 7, 12, 14, 13, 15), r);
}

// Partial dot products (16 lanes to be summed) of the G query heads of kv head h with one K row.
// float32: q is pre-scaled, K converted row by row. bf16 with AVX512_BF16: dpbf16 multiplies bf16 pairs
// exactly and accumulates in fp32, with no conversion of K; the scale is applied to the scores afterwards.
struct QueryF32 {
    std::vector<__m512> v;  // (heads, head_dim / 16)
    static constexpr bool kScaled = true;
    template <typename T>
    void init(const T* q, int64_t H, int64_t D, float scale) {
        v.resize(H * D / 16);
        for (int64_t i = 0; i < H * D / 16; ++i) v[i] = _mm512_mul_ps(load16(q + 16 * i), _mm512_set1_ps(scale));
    }
    template <typename T>
    __m512 dot(const T* kr, int64_t hq, int64_t nv) const {  // 16 partial sums of q[hq] . k
        const __m512* qh = v.data() + hq * nv;
        __m512 s = _mm512_mul_ps(qh[0], load16(kr));
        for (int64_t j = 1; j < nv; ++j) s = _mm512_fmadd_ps(qh[j], load16(kr + 16 * j), s);
        return s;
    }
};

#ifdef __AVX512BF16__
struct QueryBf16 {  // for head_dim a multiple of 32
    std::vector<__m512bh> v;  // (heads, head_dim / 32) pairs
    static constexpr bool kScaled = false;
    void init(const uint16_t* q, int64_t H, int64_t D, float) {
        v.resize(H * D / 32);
        for (int64_t i = 0; i < H * D / 32; ++i) v[i] = (__m512bh)_mm512_loadu_si512(q + 32 * i);
    }
    __m512 dot(const uint16_t* kr, int64_t hq, int64_t nv) const {
        const int64_t np = nv / 2;
        const __m512bh* qh = v.data() + hq * np;
        __m512 s = _mm512_dpbf16_ps(_mm512_setzero_ps(), qh[0], (__m512bh)_mm512_loadu_si512(kr));
        for (int64_t j = 1; j < np; ++j) s = _mm512_dpbf16_ps(s, qh[j], (__m512bh)_mm512_loadu_si512(kr + 32 * j));
        return s;
    }
};
#endif

// Prefetch `count` token rows (all kv heads: token_bytes each) starting at (blk, off) of the block table.
// Both passes are bound by fetching K/V rows from memory; asking for the next 16 rows while computing on
// the current ones hides most of that latency.
//
// Into L2 (the T2 hint), not L1 (T0): a decode step streams the whole KV cache from DRAM, and a T0 prefetch
// holds one of the core's few L1 miss buffers until its line arrives, so a burst of them (16 rows of all kv
// heads) stalls the core at the prefetch instructions themselves. T1/T2 requests are tracked by L2, which keeps
// more of them in flight; the line then comes from L2 when used. Both hints beat T0 by a wide margin in the
// kernel alone; T2 was the faster inside the engine's batched decode steps (it disturbs the weights' lines in
// L2 less). Results are bit-identical: a prefetch changes no arithmetic.
constexpr auto kPrefetchHint = _MM_HINT_T2;  // an enum in GCC, an int in clang

inline void prefetch_rows(const char* cache, const int32_t* table, int64_t blk, int64_t off, int64_t count,
                          int64_t block_size, int64_t token_bytes, int64_t num_blocks) {
    for (int64_t i = 0; i < count && blk < num_blocks; ++i) {
        const char* row = cache + (table[blk] * block_size + off) * token_bytes;
        for (int64_t b = 0; b < token_bytes; b += 64) _mm_prefetch(row + b, kPrefetchHint);
        if (++off == block_size) off = 0, ++blk;
    }
}

// One sequence, all heads: a block's rows for all kv heads are contiguous (block_size * kv_heads * head_dim
// values), so walking them in order streams memory; one kv head at a time would stride through it kv_heads
// times (measured ~1.6x slower). Scores go to scores[head * len + token].
template <typename T, typename Query>
void seq_scores(const Query& qs, const T* kc, const int32_t* table, int64_t len, int64_t H, int64_t KVH,
                int64_t D, int64_t block_size, float* scores) {
    const int64_t nv = D / 16, G = H / KVH;
    const int64_t token_stride = KVH * D, block_stride = block_size * token_stride;
    // Rows past the end of the context point at zeros, so every group is 16 tokens with no branch and its
    // 16 partial sums stay in registers.
    alignas(64) static const T zeros[kMaxDim] = {};
    const T* rows[16];
    int64_t blk = 0, off = 0;  // walked incrementally: no division per token
    for (int64_t t0 = 0; t0 < len; t0 += 16) {
        const int64_t n = len - t0 < 16 ? len - t0 : 16;
        for (int64_t i = 0; i < 16; ++i) {
            if (i >= n) { rows[i] = zeros; continue; }
            rows[i] = kc + table[blk] * block_stride + off * token_stride;
            if (++off == block_size) off = 0, ++blk;
        }
        prefetch_rows(reinterpret_cast<const char*>(kc), table, blk, off, 16, block_size, token_stride * sizeof(T),
                      (len + block_size - 1) / block_size);
        const __mmask16 mask = static_cast<__mmask16>((1u << n) - 1u);
        for (int64_t h = 0; h < KVH; ++h) {
            const int64_t hd = h * D;
            for (int64_t hq = h * G; hq < (h + 1) * G; ++hq) {
                __m512 part[16];
                for (int i = 0; i < 16; ++i) part[i] = qs.dot(rows[i] == zeros ? zeros : rows[i] + hd, hq, nv);
                _mm512_mask_storeu_ps(scores + hq * len + t0, mask, reduce16(part));
            }
        }
    }
}

// acc[head, :] += sum over tokens of p[head, token] * V[token, kv head of head, :] (16 floats per vector).
template <typename T>
void values_any(const T* vc, const int32_t* table, int64_t len, int64_t H, int64_t KVH, int64_t D,
                int64_t block_size, const float* scores, __m512* acc) {
    const int64_t nv = D / 16, G = H / KVH;
    const int64_t token_stride = KVH * D, block_stride = block_size * token_stride;
    __m512 row[kMaxDim / 16];
    for (int64_t t = 0, blk = 0, off = 0; t < len; ++t) {
        const T* base = vc + table[blk] * block_stride + off * token_stride;
        if (++off == block_size) off = 0, ++blk;
        for (int64_t h = 0; h < KVH; ++h) {
            for (int64_t j = 0; j < nv; ++j) row[j] = load16(base + h * D + 16 * j);
            for (int64_t hq = h * G; hq < (h + 1) * G; ++hq) {
                const __m512 p = _mm512_set1_ps(scores[hq * len + t]);
                for (int64_t j = 0; j < nv; ++j) acc[hq * nv + j] = _mm512_fmadd_ps(p, row[j], acc[hq * nv + j]);
            }
        }
    }
}

// Entering a block: ask for the next block's rows of one head (`rows` points at its first). Rows of one head are
// strided by kv_heads * head_dim, which the hardware prefetcher follows poorly (~20% faster from DRAM).
template <typename T>
inline void prefetch_head_rows(const T* rows, int64_t D, int64_t token_stride, int64_t block_size) {
    const char* base = reinterpret_cast<const char*>(rows);
    const int64_t size = static_cast<int64_t>(sizeof(T)), row_bytes = D * size, stride = token_stride * size;
    for (int64_t i = 0; i < block_size; ++i)
        for (int64_t b = 0; b < row_bytes; b += 64) _mm_prefetch(base + i * stride + b, kPrefetchHint);
}

// The same with the group size and head_dim / 16 known at compile time, one kv head at a time, so the
// G x NV accumulators live in registers for the whole context (values_any keeps them in memory: 2x slower).
template <int G, int NV, typename T>
void values_kv_head(const T* vc, const int32_t* table, int64_t len, int64_t h, int64_t KVH, int64_t block_size,
                    const float* scores, __m512* acc) {
    constexpr int64_t D = 16 * NV;
    const int64_t token_stride = KVH * D, block_stride = block_size * token_stride;
    __m512 a[G][NV];
    for (int g = 0; g < G; ++g)
        for (int j = 0; j < NV; ++j) a[g][j] = _mm512_setzero_ps();
    const float* sc = scores + h * G * len;
    const int64_t num_blocks = (len + block_size - 1) / block_size;
    for (int64_t t = 0, blk = 0, off = 0; t < len; ++t) {
        const T* vr = vc + table[blk] * block_stride + off * token_stride + h * D;
        if (++off == block_size) off = 0, ++blk;
        if (off == 0 && blk + 1 < num_blocks) prefetch_head_rows(vc + table[blk + 1] * block_stride + h * D, D,
                                                                 token_stride, block_size);
        __m512 row[NV];
        for (int j = 0; j < NV; ++j) row[j] = load16(vr + 16 * j);
        for (int g = 0; g < G; ++g) {
            const __m512 p = _mm512_set1_ps(sc[g * len + t]);
            for (int j = 0; j < NV; ++j) a[g][j] = _mm512_fmadd_ps(p, row[j], a[g][j]);
        }
    }
    for (int g = 0; g < G; ++g)
        for (int j = 0; j < NV; ++j) acc[(h * G + g) * NV + j] = a[g][j];
}

template <typename T>
bool values_fixed(const T* vc, const int32_t* table, int64_t len, int64_t H, int64_t KVH, int64_t D,
                  int64_t block_size, const float* scores, __m512* acc) {
    // (group, head_dim / 16) of common models: SmolLM2 (3, 4), Llama-3 8B (4, 8), Qwen2 1.5B / 7B (6, 8) / (7, 8)
    using Fn = void (*)(const T*, const int32_t*, int64_t, int64_t, int64_t, int64_t, const float*, __m512*);
    struct Entry { int64_t g, nv; Fn fn; };
    static const Entry entries[] = {
        {1, 4, values_kv_head<1, 4, T>}, {2, 4, values_kv_head<2, 4, T>}, {3, 4, values_kv_head<3, 4, T>},
        {4, 4, values_kv_head<4, 4, T>}, {1, 8, values_kv_head<1, 8, T>}, {2, 8, values_kv_head<2, 8, T>},
        {4, 8, values_kv_head<4, 8, T>}, {6, 8, values_kv_head<6, 8, T>}, {7, 8, values_kv_head<7, 8, T>},
    };
    for (const Entry& e : entries) {
        if (e.g == H / KVH && e.nv == D / 16) {
            for (int64_t h = 0; h < KVH; ++h) e.fn(vc, table, len, h, KVH, block_size, scores, acc);
            return true;
        }
    }
    return false;
}

#ifdef __AVX512BF16__
// values_kv_head for bf16 caches with P rounded to bf16: two tokens' V rows are interleaved into the pair
// layout of vdpbf16ps (4 permutes per 2 tokens for head_dim 64), so one instruction does the multiply-adds of
// both tokens, and V is never converted to fp32. Half the instructions of values_kv_head; torch's bf16 flash
// SDPA rounds P to bf16 for its P.V product the same way. Needs an even block_size (pairs within a block).
template <int G, int NV>
void values_kv_head_bf16(const uint16_t* vc, const int32_t* table, int64_t len, int64_t h, int64_t KVH,
                         int64_t block_size, const uint16_t* probs, int64_t ld, __m512* acc) {
    constexpr int64_t D = 16 * NV;
    const int64_t token_stride = KVH * D, block_stride = block_size * token_stride;
    __m512 a[G][NV];
    for (int g = 0; g < G; ++g)
        for (int j = 0; j < NV; ++j) a[g][j] = _mm512_setzero_ps();
    const uint16_t* pr = probs + h * G * ld;
    const int64_t num_blocks = (len + block_size - 1) / block_size;
    for (int64_t t = 0, blk = 0, off = 0; t < len; t += 2) {
        const uint16_t* r0 = vc + table[blk] * block_stride + off * token_stride + h * D;
        const bool two = t + 1 < len;  // an odd context's last token pairs with zeros (its P pair is 0 too)
        off += 2;
        if (off == block_size) {
            off = 0, ++blk;
            if (blk + 1 < num_blocks) prefetch_head_rows(vc + table[blk + 1] * block_stride + h * D, D, token_stride,
                                                         block_size);
        }
        __m512i vv[NV];
        for (int j = 0; j < NV / 2; ++j) {
            const __m512i x = _mm512_loadu_si512(r0 + 32 * j);
            const __m512i y = two ? _mm512_loadu_si512(r0 + token_stride + 32 * j) : _mm512_setzero_si512();
            interleave_pairs(x, y, &vv[2 * j], &vv[2 * j + 1]);
        }
        for (int g = 0; g < G; ++g) {
            int32_t pair;
            std::memcpy(&pair, pr + g * ld + t, sizeof pair);
            const __m512bh w = (__m512bh)_mm512_set1_epi32(pair);
            for (int j = 0; j < NV; ++j) a[g][j] = _mm512_dpbf16_ps(a[g][j], w, (__m512bh)vv[j]);
        }
    }
    for (int g = 0; g < G; ++g)
        for (int j = 0; j < NV; ++j) acc[(h * G + g) * NV + j] = a[g][j];
}

bool values_fixed_bf16(const uint16_t* vc, const int32_t* table, int64_t len, int64_t H, int64_t KVH, int64_t D,
                       int64_t block_size, const uint16_t* probs, int64_t ld, __m512* acc) {
    using Fn = void (*)(const uint16_t*, const int32_t*, int64_t, int64_t, int64_t, int64_t, const uint16_t*,
                        int64_t, __m512*);
    struct Entry { int64_t g, nv; Fn fn; };
    static const Entry entries[] = {  // G x NV accumulators + NV pairs fit the 32 registers
        {1, 4, values_kv_head_bf16<1, 4>}, {2, 4, values_kv_head_bf16<2, 4>}, {3, 4, values_kv_head_bf16<3, 4>},
        {4, 4, values_kv_head_bf16<4, 4>}, {1, 8, values_kv_head_bf16<1, 8>}, {2, 8, values_kv_head_bf16<2, 8>},
    };
    if (block_size % 2 != 0) return false;
    for (const Entry& e : entries) {
        if (e.g == H / KVH && e.nv == D / 16) {
            for (int64_t h = 0; h < KVH; ++h) e.fn(vc, table, len, h, KVH, block_size, probs, ld, acc);
            return true;
        }
    }
    return false;
}
#endif

template <typename T, typename Query>
void one_seq_avx512(Query& qs, const T* q, const T* kc, const T* vc, const int32_t* table, int64_t len, T* out,
                    int64_t H, int64_t KVH, int64_t D, int64_t block_size, float scale, float* scores, __m512* acc,
                    uint16_t* probs) {
    const int64_t nv = D / 16, G = H / KVH;
    qs.init(q, H, D, scale);
    seq_scores(qs, kc, table, len, H, KVH, D, block_size, scores);
    const __m512 score_scale = _mm512_set1_ps(Query::kScaled ? 1.f : scale);
    const int64_t ld = (len + 15) / 16 * 16;  // probs row stride
    float inv[kMaxHeads];
    for (int64_t hq = 0; hq < H; ++hq) {
        float* sg = scores + hq * len;
        __m512 mx = _mm512_set1_ps(-INFINITY);
        for (int64_t t = 0; t < len; t += 16) {  // a scalar max was a 4-cycle dependency chain per score
            const __mmask16 k = static_cast<__mmask16>(len - t >= 16 ? 0xffffu : (1u << (len - t)) - 1u);
            mx = _mm512_mask_max_ps(mx, k, mx, _mm512_maskz_loadu_ps(k, sg + t));
        }
        const __m512 mv = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
        __m512 sum = _mm512_setzero_ps();
        for (int64_t t = 0; t < len; t += 16) {
            const __mmask16 k = static_cast<__mmask16>(len - t >= 16 ? 0xffffu : (1u << (len - t)) - 1u);
            const __m512 x = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, sg + t), mv), score_scale);
            const __m512 e = _mm512_maskz_mov_ps(k, exp16_nonpositive(x));
            _mm512_mask_storeu_ps(sg + t, k, e);
            if (probs != nullptr) store16(probs + hq * ld + t, e);  // zeros past len: the pair tail
            sum = _mm512_add_ps(sum, e);
        }
        inv[hq] = 1.f / _mm512_reduce_add_ps(sum);
        for (int64_t j = 0; j < nv; ++j) acc[hq * nv + j] = _mm512_setzero_ps();
    }
    bool done = false;
#ifdef __AVX512BF16__
    if constexpr (std::is_same_v<T, uint16_t>) {
        if (probs != nullptr) done = values_fixed_bf16(vc, table, len, H, KVH, D, block_size, probs, ld, acc);
    }
#endif
    if (!done && !values_fixed(vc, table, len, H, KVH, D, block_size, scores, acc)) {
        values_any(vc, table, len, H, KVH, D, block_size, scores, acc);
    }
    alignas(64) float tmp[16];
    for (int64_t hq = 0; hq < H; ++hq) {
        for (int64_t j = 0; j < nv; ++j) {
            _mm512_store_ps(tmp, _mm512_mul_ps(acc[hq * nv + j], _mm512_set1_ps(inv[hq])));
            for (int d = 0; d < 16; ++d) store(out + hq * D + 16 * j + d, tmp[d]);
        }
    }
}

template <typename T>
void decode_avx512(const T* q, int64_t q_stride, const T* kc, const T* vc, const int32_t* tables,
                   int64_t table_stride, const int32_t* lens, T* out, int64_t out_stride, int64_t B, int64_t H,
                   int64_t KVH, int64_t D, int64_t block_size, float scale, int64_t max_len) {
    // Sequences are the unit of work: a single stream's step runs on the calling thread rather than wake a
    // team (with sleeping OpenMP threads, once per layer) for one item.
#pragma omp parallel if (B > 1)
    {
        std::vector<float> scores(H * (max_len + 16));
        std::vector<__m512> acc(H * D / 16);
        // bf16 P for the bf16 P.V path (rows of (len + 15) / 16 * 16); none for float32 caches
        std::vector<uint16_t> probs(std::is_same_v<T, uint16_t> ? H * (max_len + 16) : 0);
        uint16_t* pp = probs.empty() ? nullptr : probs.data();
#ifdef __AVX512BF16__
        constexpr bool kBf16 = std::is_same_v<T, uint16_t>;
        using Query = std::conditional_t<kBf16, QueryBf16, QueryF32>;
        const bool use = !kBf16 || D % 32 == 0;
#else
        using Query = QueryF32;
        const bool use = true;
#endif
        Query qs;
        QueryF32 qf;  // bf16 with a head_dim the bf16 pairs do not fit
#pragma omp for schedule(dynamic, 1)
        for (int64_t b = 0; b < B; ++b) {
            if (use)
                one_seq_avx512(qs, q + b * q_stride, kc, vc, tables + b * table_stride, lens[b],
                               out + b * out_stride, H, KVH, D, block_size, scale, scores.data(), acc.data(), pp);
            else
                one_seq_avx512(qf, q + b * q_stride, kc, vc, tables + b * table_stride, lens[b],
                               out + b * out_stride, H, KVH, D, block_size, scale, scores.data(), acc.data(), pp);
        }
    }
}
#endif

template <typename T>
void decode(const T* q, int64_t q_stride, const T* kc, const T* vc, const int32_t* tables, int64_t table_stride,
            const int32_t* lens, T* out, int64_t out_stride, int64_t B, int64_t H, int64_t KVH, int64_t D,
            int64_t block_size, float scale) {
    const int64_t G = H / KVH;
    int64_t max_len = 1;
    for (int64_t b = 0; b < B; ++b) max_len = lens[b] > max_len ? lens[b] : max_len;
#ifdef __AVX512F__
    if (D % 16 == 0 && H <= kMaxHeads) {
        decode_avx512(q, q_stride, kc, vc, tables, table_stride, lens, out, out_stride, B, H, KVH, D, block_size,
                      scale, max_len);
        return;
    }
#endif
#pragma omp parallel
    {
        std::vector<float> scores(G * max_len);
#pragma omp for schedule(dynamic, 1)
        for (int64_t item = 0; item < B * KVH; ++item) {
            const int64_t b = item / KVH, h = item % KVH;
            one_item(q + b * q_stride, kc, vc, tables + b * table_stride, lens[b], out + b * out_stride, h, G, KVH,
                     D, block_size, scale, scores.data());
        }
    }
}

}  // namespace

extern "C" {
void paged_decode_f32(const float* q, int64_t q_stride, const float* kc, const float* vc, const int32_t* tables,
                      int64_t table_stride, const int32_t* lens, float* out, int64_t out_stride, int64_t B,
                      int64_t H, int64_t KVH, int64_t D, int64_t block_size, float scale) {
    decode(q, q_stride, kc, vc, tables, table_stride, lens, out, out_stride, B, H, KVH, D, block_size, scale);
}
void paged_decode_bf16(const uint16_t* q, int64_t q_stride, const uint16_t* kc, const uint16_t* vc,
                       const int32_t* tables, int64_t table_stride, const int32_t* lens, uint16_t* out,
                       int64_t out_stride, int64_t B, int64_t H, int64_t KVH, int64_t D, int64_t block_size,
                       float scale) {
    decode(q, q_stride, kc, vc, tables, table_stride, lens, out, out_stride, B, H, KVH, D, block_size, scale);
}
}
