// CPU causal prefill attention in bf16, loaded by cpu_prefill_attention.py (see there for what it does and why).
//
// Layout of the work, per call (one prefill chunk):
// 1. K and V of every kv head are packed once into the pair layout AVX512-BF16's dot product wants
//    (`vdpbf16ps` multiplies bf16 pairs exactly and accumulates in fp32), zero-padded to a multiple of 64 keys;
// 2. the query rows (token, query head) of each kv head are cut into blocks of 4 rows; per block: scores
//    against the keys its causal limit allows (4 rows x 64 keys in 16 registers), softmax in fp32, then P.V
//    with P rounded to bf16 (as torch's flash kernel does for bf16) and fp32 accumulators, written out once.
//
// The `fma` form multiplies the same packed K and V with fp32 FMAs instead: each packed pair is widened in
// registers (the high half of a 32-bit lane is its odd member, the low half shifted up its even one), the
// block's query rows are widened once, and P stays fp32. A Xeon without AMX runs `vdpbf16ps` at about half its
// fp32 FMA rate, Zen 4 at twice. The `amx` form (built where the compiler targets AMX) multiplies the same packed
// K and V on tiles, 16 tokens of one query head at a time (see prefill_amx). Which form runs is measured per CPU
// (cpu_prefill_attention.py).
#include "cpu_prelude.h"

#include <algorithm>

namespace {

#if defined(__AVX512F__) && defined(__AVX512BF16__)
constexpr int64_t kRows = 4;    // query rows per block
constexpr int64_t kKeys = 64;   // keys per score tile (4 vectors of 16)

inline __m512i bcast_pair(const uint16_t* p) {
    int32_t v;
    std::memcpy(&v, p, sizeof v);
    return _mm512_set1_epi32(v);
}

// kp[group of 16 keys][pair][16 lanes][2]: lane l of pair p holds key (16 * group + l)'s dims 2p and 2p + 1.
void pack_k(const uint16_t* k, int64_t k_stride, int64_t n, int64_t n_pad, int64_t D, uint16_t* kp) {
    const int64_t P = D / 2;
    uint32_t* out = reinterpret_cast<uint32_t*>(kp);
    for (int64_t key = 0; key < n_pad; ++key) {
        uint32_t* dst = out + (key / 16) * P * 16 + key % 16;
        if (key < n) {
            const uint16_t* src = k + key * k_stride;
            for (int64_t p = 0; p < P; ++p) std::memcpy(dst + p * 16, src + 2 * p, 4);
        } else {
            for (int64_t p = 0; p < P; ++p) dst[p * 16] = 0;
        }
    }
}

// vp[pair of keys][dim][2]: V rows 2j and 2j + 1 interleaved, so one vector holds 16 dims of both keys.
void pack_v(const uint16_t* v, int64_t v_stride, int64_t n, int64_t n_pad, int64_t D, uint16_t* vp) {
    for (int64_t j = 0; j < n_pad; j += 2) {
        uint16_t* dst = vp + j * D;
        for (int64_t d = 0; d < D; d += 32) {
            const __m512i a = j < n ? _mm512_loadu_si512(v + j * v_stride + d) : _mm512_setzero_si512();
            const __m512i b = j + 1 < n ? _mm512_loadu_si512(v + (j + 1) * v_stride + d) : _mm512_setzero_si512();
            __m512i lo, hi;
            interleave_pairs(a, b, &lo, &hi);
            _mm512_storeu_si512(dst + 2 * d, lo);
            _mm512_storeu_si512(dst + 2 * d + 32, hi);
        }
    }
}

// scores[r][0, n_keys) = q_r . k for 4 rows against packed K, 64 keys at a time (n_keys a multiple of 64).
void block_scores(const uint16_t* const* rows, const uint16_t* kp, int64_t n_keys, int64_t D, float* scores,
                  int64_t ld) {
    const int64_t P = D / 2;
    for (int64_t k0 = 0; k0 < n_keys; k0 += kKeys) {
        __m512 acc[kRows][4];
        for (int r = 0; r < kRows; ++r)
            for (int c = 0; c < 4; ++c) acc[r][c] = _mm512_setzero_ps();
        const uint16_t* base = kp + (k0 / 16) * P * 32;
        for (int64_t p = 0; p < P; ++p) {
            __m512bh kv[4];
            for (int c = 0; c < 4; ++c) kv[c] = (__m512bh)_mm512_loadu_si512(base + (c * P + p) * 32);
            for (int r = 0; r < kRows; ++r) {
                const __m512bh q = (__m512bh)bcast_pair(rows[r] + 2 * p);
                for (int c = 0; c < 4; ++c) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], q, kv[c]);
            }
        }
        for (int r = 0; r < kRows; ++r)
            for (int c = 0; c < 4; ++c) _mm512_storeu_ps(scores + r * ld + k0 + 16 * c, acc[r][c]);
    }
}

// block_scores with fp32 FMAs: qf holds the 4 rows widened to fp32 (kRows x D).
void block_scores_fma(const float* qf, const uint16_t* kp, int64_t n_keys, int64_t D, float* scores,
                      int64_t ld) {
    const int64_t P = D / 2;
    const __m512i high = _mm512_set1_epi32(static_cast<int32_t>(0xFFFF0000u));
    for (int64_t k0 = 0; k0 < n_keys; k0 += kKeys) {
        __m512 acc[kRows][4];
        for (int r = 0; r < kRows; ++r)
            for (int c = 0; c < 4; ++c) acc[r][c] = _mm512_setzero_ps();
        const uint16_t* base = kp + (k0 / 16) * P * 32;
        for (int64_t p = 0; p < P; ++p) {
            __m512 kf[4];
            for (int c = 0; c < 4; ++c)
                kf[c] = _mm512_castsi512_ps(_mm512_and_si512(_mm512_loadu_si512(base + (c * P + p) * 32), high));
            for (int r = 0; r < kRows; ++r) {
                const __m512 q = _mm512_set1_ps(qf[r * D + 2 * p + 1]);
                for (int c = 0; c < 4; ++c) acc[r][c] = _mm512_fmadd_ps(q, kf[c], acc[r][c]);
            }
            for (int c = 0; c < 4; ++c)
                kf[c] = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_loadu_si512(base + (c * P + p) * 32), 16));
            for (int r = 0; r < kRows; ++r) {
                const __m512 q = _mm512_set1_ps(qf[r * D + 2 * p]);
                for (int c = 0; c < 4; ++c) acc[r][c] = _mm512_fmadd_ps(q, kf[c], acc[r][c]);
            }
        }
        for (int r = 0; r < kRows; ++r)
            for (int c = 0; c < 4; ++c) _mm512_storeu_ps(scores + r * ld + k0 + 16 * c, acc[r][c]);
    }
}

// block_values with fp32 FMAs and fp32 P (p rows of ld floats).
template <int R, int NV>
void block_values_fma(const float* p, int64_t ld, const uint16_t* vp, int64_t n_pairs, __m512 (*acc)[NV]) {
    const __m512i high = _mm512_set1_epi32(static_cast<int32_t>(0xFFFF0000u));
    for (int r = 0; r < R; ++r)
        for (int n = 0; n < NV; ++n) acc[r][n] = _mm512_setzero_ps();
    for (int64_t j = 0; j < n_pairs; ++j) {
        const uint16_t* vj = vp + j * NV * 32;
        __m512 vf[NV];
        for (int n = 0; n < NV; ++n)
            vf[n] = _mm512_castsi512_ps(_mm512_and_si512(_mm512_loadu_si512(vj + 32 * n), high));  // key 2j + 1
        for (int r = 0; r < R; ++r) {
            const __m512 w = _mm512_set1_ps(p[r * ld + 2 * j + 1]);
            for (int n = 0; n < NV; ++n) acc[r][n] = _mm512_fmadd_ps(w, vf[n], acc[r][n]);
        }
        for (int n = 0; n < NV; ++n)
            vf[n] = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_loadu_si512(vj + 32 * n), 16));  // key 2j
        for (int r = 0; r < R; ++r) {
            const __m512 w = _mm512_set1_ps(p[r * ld + 2 * j]);
            for (int n = 0; n < NV; ++n) acc[r][n] = _mm512_fmadd_ps(w, vf[n], acc[r][n]);
        }
    }
}

// out_r = sum_j p[r][j] v[j] over key pairs [0, n_pairs), NV vectors of 16 dims per row, R rows at a time.
template <int R, int NV>
void block_values(const uint16_t* p, int64_t ld, const uint16_t* vp, int64_t n_pairs, __m512 (*acc)[NV]) {
    for (int r = 0; r < R; ++r)
        for (int n = 0; n < NV; ++n) acc[r][n] = _mm512_setzero_ps();
    for (int64_t j = 0; j < n_pairs; ++j) {
        __m512bh vv[NV];
        for (int n = 0; n < NV; ++n) vv[n] = (__m512bh)_mm512_loadu_si512(vp + (j * NV + n) * 32);
        for (int r = 0; r < R; ++r) {
            const __m512bh w = (__m512bh)bcast_pair(p + r * ld + 2 * j);
            for (int n = 0; n < NV; ++n) acc[r][n] = _mm512_dpbf16_ps(acc[r][n], w, vv[n]);
        }
    }
}

// One row of scores -> its unnormalised probabilities exp(scale * (s - max)) over keys [0, limit), zero over
// [limit, n_keys) (n_keys a multiple of 16); returns 1 / their sum (0 for a row that sees no key). `Fma`: P in
// fp32, in place of the scores; else bf16 into `pr`.
template <bool Fma>
float softmax_row(float* s, uint16_t* pr, int64_t limit, int64_t n_keys, float scale) {
    const __m512 sc = _mm512_set1_ps(scale);
    __m512 mx = _mm512_set1_ps(-INFINITY);
    for (int64_t t = 0; t < limit; t += 16) {
        const int64_t left = limit - t;
        const __mmask16 m = static_cast<__mmask16>(left >= 16 ? 0xffffu : (1u << left) - 1u);
        mx = _mm512_mask_max_ps(mx, m, mx, _mm512_maskz_loadu_ps(m, s + t));
    }
    const __m512 mv = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
    __m512 sum = _mm512_setzero_ps();
    for (int64_t t = 0; t < n_keys; t += 16) {
        const int64_t left = limit - t;
        const __mmask16 m = static_cast<__mmask16>(left >= 16 ? 0xffffu : left <= 0 ? 0u : (1u << left) - 1u);
        const __m512 x = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, s + t), mv), sc);
        const __m512 e = _mm512_maskz_mov_ps(m, exp16_nonpositive(x));
        sum = _mm512_add_ps(sum, e);
        if constexpr (Fma) _mm512_storeu_ps(s + t, e);
        else store16(pr + t, e);
    }
    return limit > 0 ? 1.f / _mm512_reduce_add_ps(sum) : 0.f;
}

template <int NV, bool Fma>
void prefill(const uint16_t* q, int64_t q_stride, const uint16_t* k, int64_t k_stride, const uint16_t* v,
             int64_t v_stride, uint16_t* out, int64_t out_stride, int64_t n_q, int64_t n_k, int64_t H, int64_t KVH,
             float scale) {
    constexpr int64_t D = 16 * NV;
    const int64_t G = H / KVH, offset = n_k - n_q;  // query token i sits at position offset + i
    const int64_t n_pad = (n_k + kKeys - 1) / kKeys * kKeys;
    std::vector<uint16_t> kp(KVH * n_pad * D), vp(KVH * n_pad * D);
    const int64_t rows_per_head = n_q * G, blocks_per_head = (rows_per_head + kRows - 1) / kRows;
#pragma omp parallel
    {
#pragma omp for schedule(static)
        for (int64_t h = 0; h < 2 * KVH; ++h) {
            if (h < KVH) pack_k(k + h * D, k_stride, n_k, n_pad, D, kp.data() + h * n_pad * D);
            else pack_v(v + (h - KVH) * D, v_stride, n_k, n_pad, D, vp.data() + (h - KVH) * n_pad * D);
        }
        std::vector<float> scores(kRows * n_pad);
        std::vector<uint16_t> probs(Fma ? 0 : kRows * n_pad);
        alignas(64) float qf[kRows * D];
        // Later blocks see more keys: hand them out first so the threads finish together.
#pragma omp for schedule(dynamic, 1)
        for (int64_t item = 0; item < KVH * blocks_per_head; ++item) {
            const int64_t h = item % KVH, blk = blocks_per_head - 1 - item / KVH;
            const uint16_t* rows[kRows];
            int64_t limit[kRows];  // keys [0, limit) visible to each row
            int64_t n_rows = 0, max_limit = 0;
            for (int64_t r = 0; r < kRows; ++r) {
                const int64_t row = blk * kRows + r;  // row = token * G + query head within the group
                const int64_t tok = row < rows_per_head ? row / G : 0, hq = h * G + row % G;
                rows[r] = q + tok * q_stride + hq * D;
                limit[r] = row < rows_per_head ? offset + tok + 1 : 0;
                if (row < rows_per_head) n_rows = r + 1;
                max_limit = limit[r] > max_limit ? limit[r] : max_limit;
            }
            const int64_t n_keys = (max_limit + kKeys - 1) / kKeys * kKeys;
            if constexpr (Fma) {
                for (int64_t r = 0; r < kRows; ++r)
                    for (int64_t d = 0; d < D; ++d) qf[r * D + d] = load(rows[r][d]);
                block_scores_fma(qf, kp.data() + h * n_pad * D, n_keys, D, scores.data(), n_pad);
            } else {
                block_scores(rows, kp.data() + h * n_pad * D, n_keys, D, scores.data(), n_pad);
            }
            float inv[kRows];
            for (int64_t r = 0; r < kRows; ++r)
                inv[r] = softmax_row<Fma>(scores.data() + r * n_pad, Fma ? nullptr : probs.data() + r * n_pad,
                                          limit[r], n_keys, scale);
            const int64_t n_pairs = (max_limit + 1) / 2;
            const uint16_t* vh = vp.data() + h * n_pad * D;
            constexpr int R = NV <= 4 ? 4 : 2;  // R x NV accumulators stay in registers
            for (int64_t r0 = 0; r0 < n_rows; r0 += R) {
                __m512 acc[R][NV];
                if constexpr (Fma) block_values_fma<R, NV>(scores.data() + r0 * n_pad, n_pad, vh, n_pairs, acc);
                else block_values<R, NV>(probs.data() + r0 * n_pad, n_pad, vh, n_pairs, acc);
                for (int64_t r = r0; r < r0 + R && r < n_rows; ++r) {
                    const int64_t row = blk * kRows + r, tok = row / G, hq = h * G + row % G;
                    uint16_t* o = out + tok * out_stride + hq * D;
                    for (int n = 0; n < NV; ++n)
                        store16(o + 16 * n, _mm512_mul_ps(acc[r - r0][n], _mm512_set1_ps(inv[r])));
                }
            }
        }
    }
}
#endif

#if defined(__AMX_TILE__) && defined(__AMX_BF16__) && defined(__AVX512BF16__)
#define PREFILL_AMX 1
// The AMX form: the same packed K and V, multiplied on tiles (TDPBF16PS: 16 x 16 x 32 products an instruction).
// A work item is 16 consecutive tokens of one query head, so their rows sit at one stride and load as A tiles.
// Scores: per 16 keys, one C tile summed over the head's 32-dim slices (A: the rows' slice, B: the packed K
// group's 16 pairs of that slice, which is the tile's pair layout as it is). The softmax is the vector one
// above, P in bf16. P.V: per 16 dims, one C tile summed over blocks of 32 keys (A: 16 rows x 32 probabilities,
// B: 16 packed V key pairs x those 16 dims). Same products and roundings as the vdpbf16ps form; only the order of
// the fp32 additions differs.

template <int NV>
void prefill_amx(const uint16_t* q, int64_t q_stride, const uint16_t* k, int64_t k_stride, const uint16_t* v,
                 int64_t v_stride, uint16_t* out, int64_t out_stride, int64_t n_q, int64_t n_k, int64_t H,
                 int64_t KVH, float scale) {
    constexpr int64_t D = 16 * NV, P = D / 2, S = D / 32, T = 16;  // S: 32-dim slices; T: tokens per item
    static_assert(S <= 4, "tmm2..5 hold a row block's slices");
    const int64_t G = H / KVH, offset = n_k - n_q;
    const int64_t n_pad = (n_k + kKeys - 1) / kKeys * kKeys;
    std::vector<uint16_t> kp(KVH * n_pad * D), vp(KVH * n_pad * D);
    const int64_t blocks = (n_q + T - 1) / T;
#pragma omp parallel
    {
#pragma omp for schedule(static)
        for (int64_t h = 0; h < 2 * KVH; ++h) {
            if (h < KVH) pack_k(k + h * D, k_stride, n_k, n_pad, D, kp.data() + h * n_pad * D);
            else pack_v(v + (h - KVH) * D, v_stride, n_k, n_pad, D, vp.data() + (h - KVH) * n_pad * D);
        }
        amx_configure_16x64();
        std::vector<float> scores(T * n_pad);
        std::vector<uint16_t> probs(T * n_pad);
        alignas(64) uint16_t qb[T * D];  // the block's query rows, zero past the chunk
        alignas(64) float o[4][T * 16];
        // Later blocks see more keys: hand them out first so the threads finish together.
#pragma omp for schedule(dynamic, 1)
        for (int64_t item = 0; item < H * blocks; ++item) {
            const int64_t hq = item % H, blk = blocks - 1 - item / H, h = hq / G, t0 = blk * T;
            const int64_t rows = std::min<int64_t>(T, n_q - t0);
            for (int64_t r = 0; r < T; ++r) {
                if (r < rows) std::memcpy(qb + r * D, q + (t0 + r) * q_stride + hq * D, D * 2);
                else std::memset(qb + r * D, 0, D * 2);
            }
            const int64_t n_keys = (offset + t0 + rows + 31) / 32 * 32;  // keys the last row sees, in 32s
            for (int64_t sl = 0; sl < S; ++sl) {
                switch (sl) {  // tile numbers are immediates
                    case 0: _tile_loadd(2, qb, D * 2); break;
                    case 1: _tile_loadd(3, qb + 32, D * 2); break;
                    case 2: _tile_loadd(4, qb + 64, D * 2); break;
                    default: _tile_loadd(5, qb + 96, D * 2);
                }
            }
            const uint16_t* kh = kp.data() + h * n_pad * D;
            for (int64_t g = 0; g < n_keys / 16; ++g) {
                const uint16_t* kg = kh + g * P * 32;
                _tile_zero(0);
                _tile_loadd(6, kg, 64);
                _tile_dpbf16ps(0, 2, 6);
                _tile_loadd(7, kg + 16 * 32, 64);
                _tile_dpbf16ps(0, 3, 7);
                if constexpr (S == 4) {
                    _tile_loadd(6, kg + 32 * 32, 64);
                    _tile_dpbf16ps(0, 4, 6);
                    _tile_loadd(7, kg + 48 * 32, 64);
                    _tile_dpbf16ps(0, 5, 7);
                }
                _tile_stored(0, scores.data() + 16 * g, n_pad * 4);
            }
            float inv[T];
            for (int64_t r = 0; r < T; ++r)
                inv[r] = softmax_row<false>(scores.data() + r * n_pad, probs.data() + r * n_pad,
                                            r < rows ? offset + t0 + r + 1 : 0, n_keys, scale);
            const uint16_t* vh = vp.data() + h * n_pad * D;
            for (int64_t n0 = 0; n0 < NV; n0 += 4) {  // 4 C tiles of 16 dims at a time
                _tile_zero(0);
                _tile_zero(1);
                _tile_zero(2);
                _tile_zero(3);
                for (int64_t kb = 0; kb < n_keys / 32; ++kb) {
                    const uint16_t* vb = vh + (16 * kb * NV + n0) * 32;
                    _tile_loadd(4, probs.data() + 32 * kb, n_pad * 2);
                    _tile_loadd(5, vb, NV * 64);
                    _tile_dpbf16ps(0, 4, 5);
                    _tile_loadd(6, vb + 32, NV * 64);
                    _tile_dpbf16ps(1, 4, 6);
                    _tile_loadd(7, vb + 64, NV * 64);
                    _tile_dpbf16ps(2, 4, 7);
                    _tile_loadd(5, vb + 96, NV * 64);
                    _tile_dpbf16ps(3, 4, 5);
                }
                _tile_stored(0, o[0], 64);
                _tile_stored(1, o[1], 64);
                _tile_stored(2, o[2], 64);
                _tile_stored(3, o[3], 64);
                for (int64_t r = 0; r < rows; ++r) {
                    uint16_t* dst = out + (t0 + r) * out_stride + hq * D + 16 * n0;
                    for (int c = 0; c < 4; ++c)
                        store16(dst + 16 * c, _mm512_mul_ps(_mm512_loadu_ps(o[c] + 16 * r), _mm512_set1_ps(inv[r])));
                }
            }
        }
        _tile_release();
    }
}
#endif

}  // namespace

extern "C" {
// 1 where this build has the AMX form and Linux lets this process use tile data (each process must ask,
// ARCH_REQ_XCOMP_PERM; the answer holds for all its threads); 0 otherwise, and form 2 must not be asked for.
int64_t prefill_amx_available() {
#ifdef PREFILL_AMX
    return amx_permitted() ? 1 : 0;
#else
    return 0;
#endif
}

// 1 when this build has the kernel for head_dim D (AVX512-BF16, D of 64 or 128), else 0.
int64_t prefill_supported(int64_t D) {
#if defined(__AVX512F__) && defined(__AVX512BF16__)
    return D == 64 || D == 128;
#else
    (void)D;
    return 0;
#endif
}

// Causal attention of n_q query tokens at positions [n_k - n_q, n_k) over keys [0, n_k), bf16 in and out.
// q: (n_q, H, D), k and v: (n_k, KVH, D), out: (n_q, H, D); each with its own token stride, heads packed.
// form: 0 the vdpbf16ps form, 1 the fp32-FMA form, 2 the AMX form (see the top of this file).
void prefill_attention_bf16(const uint16_t* q, int64_t q_stride, const uint16_t* k, int64_t k_stride,
                            const uint16_t* v, int64_t v_stride, uint16_t* out, int64_t out_stride, int64_t n_q,
                            int64_t n_k, int64_t H, int64_t KVH, int64_t D, float scale, int64_t form) {
#if defined(__AVX512F__) && defined(__AVX512BF16__)
    const bool fma = form == 1;
#ifdef PREFILL_AMX
    if (form == 2 && D == 64) return prefill_amx<4>(q, q_stride, k, k_stride, v, v_stride, out, out_stride, n_q, n_k,
                                                    H, KVH, scale);
    if (form == 2 && D == 128) return prefill_amx<8>(q, q_stride, k, k_stride, v, v_stride, out, out_stride, n_q, n_k,
                                                     H, KVH, scale);
#endif
    if (D == 64 && fma) prefill<4, true>(q, q_stride, k, k_stride, v, v_stride, out, out_stride, n_q, n_k, H, KVH,
                                         scale);
    else if (D == 64) prefill<4, false>(q, q_stride, k, k_stride, v, v_stride, out, out_stride, n_q, n_k, H, KVH,
                                        scale);
    else if (D == 128 && fma) prefill<8, true>(q, q_stride, k, k_stride, v, v_stride, out, out_stride, n_q, n_k, H,
                                               KVH, scale);
    else if (D == 128) prefill<8, false>(q, q_stride, k, k_stride, v, v_stride, out, out_stride, n_q, n_k, H, KVH,
                                         scale);
#else
    (void)q; (void)q_stride; (void)k; (void)k_stride; (void)v; (void)v_stride; (void)out; (void)out_stride;
    (void)n_q; (void)n_k; (void)H; (void)KVH; (void)D; (void)scale; (void)form;
#endif
}
}
