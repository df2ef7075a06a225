// Weight-only quantised linears: y = x W^T + b with W stored as int8 per output channel or as 4-bit blocks,
// de-quantised in registers. Loaded by cpu_quant.py (see there and quant.py for the formats and numerics).
//
// Layouts (K padded with zero weights to Kp, a multiple of 64):
//   int8: q (N, Kp) int8, scale (N,) fp32; w = scale[n] * q.
//   q4:   packed (N, Kp / 2) uint8 in groups of 64 weights: byte j of group g holds weight 64g + j in its low
//         nibble and 64g + 32 + j in its high nibble, so one mask and one shift give two whole 32-blocks in
//         order; d, m (N, Kp / 32) fp16; w = d * q + m with q in 0..15.
// Activations enter as fp32 or bf16 (M, K) and leave in the same dtype (M, N); all sums are fp32.
#include "cpu_prelude.h"

#include <algorithm>

namespace {

inline uint16_t to_bf16_bits(float x) { uint16_t b; store(&b, x); return b; }

// Activations -> a zero-padded (M, Kp) buffer: bf16 bits for the q4 kernel (what vdpbf16ps multiplies; fp32
// input is rounded to bf16), fp32 for int8. `asum` (M, nbp) gets each 32-block's sum of the values used,
// zero past the nb = Kp / 32 real blocks.
template <typename T>
void prepare_bf16(const T* x, int64_t M, int64_t K, int64_t Kp, int64_t nbp, uint16_t* xb, float* asum) {
    const int64_t nb = Kp / 32;
#pragma omp parallel for if (M * Kp > (1 << 16))
    for (int64_t t = 0; t < M; ++t) {
        for (int64_t b = 0; b < nb; ++b) {
            float s = 0.f;
            for (int64_t k = 32 * b; k < 32 * b + 32; ++k) {
                const uint16_t v = k < K ? to_bf16_bits(load(x[t * K + k])) : 0;
                xb[t * Kp + k] = v;
                s += load(v);
            }
            asum[t * nbp + b] = s;
        }
        for (int64_t b = nb; b < nbp; ++b) asum[t * nbp + b] = 0.f;
    }
}

template <typename T>
void prepare_f32(const T* x, int64_t M, int64_t K, int64_t Kp, float* xf) {
    for (int64_t t = 0; t < M; ++t)
        for (int64_t k = 0; k < Kp; ++k) xf[t * Kp + k] = k < K ? load(x[t * K + k]) : 0.f;
}

template <typename T> void put(T* out, float v) { store(out, v); }

// ---- q4 ------------------------------------------------------------------------------------------------

// One row's fp16 scales -> float buffers; mc = m - 128 d, the correction for the kernel's q + 128 trick.
void q4_row_scales(const uint16_t* d, const uint16_t* m, int64_t nb, float* df, float* mc) {
    for (int64_t b = 0; b < nb; ++b) {
        df[b] = half_to_float(d[b]);
        mc[b] = half_to_float(m[b]) - 128.f * df[b];
    }
}

// Scalar reference path (CPUs without AVX512_BF16): the same sums in the same precision, slower.
template <typename T>
void q4_row_scalar(const uint16_t* xb, const float* asum, int64_t M, int64_t Kp, int64_t nbp, const uint8_t* w,
                   const float* df, const float* mc, float bias, T* out, int64_t N) {
    const int64_t nb = Kp / 32;
    for (int64_t t = 0; t < M; ++t) {
        float acc = 0.f;
        for (int64_t g = 0; g < Kp / 64; ++g) {
            float sa = 0.f, sb = 0.f;
            for (int64_t j = 0; j < 32; ++j) {
                const uint8_t byte = w[32 * g + j];
                sa += static_cast<float>((byte & 0xf) + 128) * load(xb[t * Kp + 64 * g + j]);
                sb += static_cast<float>((byte >> 4) + 128) * load(xb[t * Kp + 64 * g + 32 + j]);
            }
            acc += sa * df[2 * g] + sb * df[2 * g + 1];
        }
        for (int64_t b = 0; b < nb; ++b) acc += mc[b] * asum[t * nbp + b];
        put(out + t * N, acc + bias);
    }
}

#ifdef __AVX512BF16__
// x rows -> the order q4_row_gemv reads them in: within every 32-block, the 8-value chunks 0, 2, 1, 3 (what
// unpacklo / unpackhi of a 256-bit register of weight bytes yields).
inline void permute_for_gemv(const uint16_t* xb, int64_t M, int64_t Kp, uint16_t* xq) {
    for (int64_t t = 0; t < M; ++t)
        for (int64_t b = 0; b < Kp; b += 32) {
            const uint16_t* src = xb + t * Kp + b;
            uint16_t* dst = xq + t * Kp + b;
            std::memcpy(dst, src, 16);
            std::memcpy(dst + 8, src + 16, 16);
            std::memcpy(dst + 16, src + 8, 16);
            std::memcpy(dst + 24, src + 24, 16);
        }
}

// One token (x permuted by permute_for_gemv) against one weight row -> the sum before the offset correction.
// q + 128 is a bf16 bit pattern (0x4300 | q), so one byte unpack against 0x43 expands 16 weights; 256-bit
// ops throughout (on CPUs that split 512-bit ops in two they cost the same per weight, and the unpack stays
// within 128-bit lanes, where the zero-extend of a 512-bit expansion crosses them). Each 32-block is two
// vdpbf16ps and one FMA with its scale.
inline float q4_row_gemv(const uint16_t* xq, int64_t Kp, const uint8_t* w, const float* df) {
    const __m256i low4 = _mm256_set1_epi8(0x0f), hi43 = _mm256_set1_epi8(0x43);
    const __m256 zero = _mm256_setzero_ps();
    __m256 acc_a = zero, acc_b = zero;
    for (int64_t g = 0; g < Kp / 64; ++g) {
        const __m256i bytes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 32 * g));
        const __m256i lo = _mm256_and_si256(bytes, low4);
        const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), low4);
        const uint16_t* xr = xq + 64 * g;
        const auto xv = [xr](int i) { return (__m256bh)_mm256_loadu_si256(reinterpret_cast<const __m256i*>(xr + 16 * i)); };
        __m256 sa = _mm256_dpbf16_ps(zero, (__m256bh)_mm256_unpacklo_epi8(lo, hi43), xv(0));
        sa = _mm256_dpbf16_ps(sa, (__m256bh)_mm256_unpackhi_epi8(lo, hi43), xv(1));
        __m256 sb = _mm256_dpbf16_ps(zero, (__m256bh)_mm256_unpacklo_epi8(hi, hi43), xv(2));
        sb = _mm256_dpbf16_ps(sb, (__m256bh)_mm256_unpackhi_epi8(hi, hi43), xv(3));
        acc_a = _mm256_fmadd_ps(sa, _mm256_set1_ps(df[2 * g]), acc_a);
        acc_b = _mm256_fmadd_ps(sb, _mm256_set1_ps(df[2 * g + 1]), acc_b);
    }
    const __m256 s = _mm256_add_ps(acc_a, acc_b);
    const __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    const __m128 q = _mm_add_ps(h, _mm_movehl_ps(h, h));
    return _mm_cvtss_f32(_mm_add_ss(q, _mm_movehdup_ps(q)));
}

// sum over blocks of mc[b] * asum[b], 16 blocks at a time (both buffers are zero-padded to a multiple of 16).
inline float q4_correction(const float* mc, const float* asum, int64_t nbp) {
    __m512 acc = _mm512_setzero_ps();
    for (int64_t b = 0; b < nbp; b += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(mc + b), _mm512_loadu_ps(asum + b), acc);
    return _mm512_reduce_add_ps(acc);
}

// One token at a time (x permuted by permute_for_gemv), with the offset correction and the bias.
template <typename T>
void q4_row_avx(const uint16_t* xq, const float* asum, int64_t M, int64_t Kp, int64_t nbp, const uint8_t* w,
                const float* df, const float* mc, float bias, T* out, int64_t N) {
    for (int64_t t = 0; t < M; ++t)
        put(out + t * N, q4_row_gemv(xq + t * Kp, Kp, w, df) + q4_correction(mc, asum + t * nbp, nbp) + bias);
}

// One row's fp16 scales -> float buffers (16 at a time), mc = m - 128 d; padded lanes are zero.
inline void q4_row_scales_avx(const uint16_t* d, const uint16_t* m, int64_t nb, int64_t nbp, float* df, float* mc) {
    for (int64_t b = 0; b < nbp; b += 16) {
        const __mmask16 k = b + 16 <= nb ? static_cast<__mmask16>(0xffff)
                                         : static_cast<__mmask16>((1u << (nb > b ? nb - b : 0)) - 1u);
        const __m512 dv = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, d + b));
        const __m512 mv = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, m + b));
        _mm512_storeu_ps(df + b, dv);
        _mm512_storeu_ps(mc + b, _mm512_fnmadd_ps(_mm512_set1_ps(128.f), dv, mv));
    }
}
#endif

#ifdef __AVX512BF16__
void q4_gemm_bf16(const uint16_t* xb, int64_t M, int64_t Kp, int64_t N, const uint8_t* packed, const uint16_t* d,
                  const uint16_t* m, const float* bias, uint16_t* out);
#endif

// tile > 1 with bf16 activations and 2+ tokens: q4_gemm_bf16 (weights expanded to bf16 a cache-sized panel at
// a time, as a bf16 model's own weights are rounded); otherwise one token at a time against each weight row,
// exact weights (the fp32 models' path is the exactness reference).
template <typename T>
void q4_linear(const T* x, int64_t M, int64_t K, int64_t Kp, int64_t N, const uint8_t* packed, const uint16_t* d,
               const uint16_t* m, const float* bias, T* out, int64_t tile) {
    const int64_t nb = Kp / 32, nbp = (nb + 15) / 16 * 16;
    std::vector<uint16_t> xb(static_cast<size_t>(M * Kp));
    std::vector<float> asum(static_cast<size_t>(M * nbp));
    prepare_bf16(x, M, K, Kp, nbp, xb.data(), asum.data());
#ifdef __AVX512BF16__
    if constexpr (sizeof(T) == 2) {
        if (M >= 2 && tile > 1) {
            q4_gemm_bf16(xb.data(), M, Kp, N, packed, d, m, bias, reinterpret_cast<uint16_t*>(out));
            return;
        }
    }
    std::vector<uint16_t> xq(static_cast<size_t>(M * Kp));
    permute_for_gemv(xb.data(), M, Kp, xq.data());
#else
    (void)tile;
#endif
    // Static halves: handing rows out on demand, so that a running thread could take the share of one still
    // waking from a passive wait, measured slower.
#pragma omp parallel
    {
        std::vector<float> df(static_cast<size_t>(nbp)), mc(static_cast<size_t>(nbp));
#pragma omp for schedule(static)
        for (int64_t n = 0; n < N; ++n) {
            const uint8_t* w = packed + n * (Kp / 2);
            const float b = bias ? bias[n] : 0.f;
#ifdef __AVX512BF16__
            q4_row_scales_avx(d + n * nb, m + n * nb, nb, nbp, df.data(), mc.data());
            q4_row_avx(xq.data(), asum.data(), M, Kp, nbp, w, df.data(), mc.data(), b, out + n, N);
#else
            q4_row_scales(d + n * nb, m + n * nb, nb, df.data(), mc.data());
            q4_row_scalar(xb.data(), asum.data(), M, Kp, nbp, w, df.data(), mc.data(), b, out + n, N);
#endif
        }
    }
}

// ---- int8 ----------------------------------------------------------------------------------------------

#if !defined(__AVX512F__) && defined(__AVX2__) && defined(__FMA__)
// AVX2 (no AVX-512): the same int8 -> fp32 expansion and FMAs, 8 weights per register. A 64-weight step keeps
// TILE x 2 accumulators, so tiles of up to 4 tokens stay in the 16 registers.
template <int TILE>
__attribute__((always_inline)) inline void i8_row_tile(const float* xf, int64_t Kp, const int8_t* q, float* sums) {
    __m256 acc_a[TILE], acc_b[TILE];
    for (int t = 0; t < TILE; ++t) acc_a[t] = acc_b[t] = _mm256_setzero_ps();
    for (int64_t k = 0; k < Kp; k += 16) {
        const __m256 wa = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + k))));
        const __m256 wb = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + k + 8))));
#pragma GCC unroll 8
        for (int t = 0; t < TILE; ++t) {
            acc_a[t] = _mm256_fmadd_ps(wa, _mm256_loadu_ps(xf + t * Kp + k), acc_a[t]);
            acc_b[t] = _mm256_fmadd_ps(wb, _mm256_loadu_ps(xf + t * Kp + k + 8), acc_b[t]);
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < TILE; ++t) {
        const __m256 s = _mm256_add_ps(acc_a[t], acc_b[t]);
        const __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
        const __m128 q4 = _mm_add_ps(h, _mm_movehl_ps(h, h));
        sums[t] = _mm_cvtss_f32(_mm_add_ss(q4, _mm_movehdup_ps(q4)));
    }
}
#define I8_VECTOR 1
#endif

#ifdef __AVX512F__
#define I8_VECTOR 1
template <int TILE>
__attribute__((always_inline)) inline void i8_row_tile(const float* xf, int64_t Kp, const int8_t* q, float* sums) {
    __m512 acc_a[TILE], acc_b[TILE];
    for (int t = 0; t < TILE; ++t) acc_a[t] = acc_b[t] = _mm512_setzero_ps();
    for (int64_t k = 0; k < Kp; k += 32) {
        const __m128i* p = reinterpret_cast<const __m128i*>(q + k);
        const __m512 wa = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p)));
        const __m512 wb = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p + 1)));
#pragma GCC unroll 8
        for (int t = 0; t < TILE; ++t) {
            acc_a[t] = _mm512_fmadd_ps(wa, _mm512_loadu_ps(xf + t * Kp + k), acc_a[t]);
            acc_b[t] = _mm512_fmadd_ps(wb, _mm512_loadu_ps(xf + t * Kp + k + 16), acc_b[t]);
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < TILE; ++t) sums[t] = _mm512_reduce_add_ps(_mm512_add_ps(acc_a[t], acc_b[t]));
}

#ifdef __AVX512BF16__
// bf16 activations, TILE >= 2: int8 values are exact in bf16 (|q| <= 127 < 2^8), so 32 weights expand once to
// bf16 and each token costs one vdpbf16ps per 32 weights; the channel's scale is applied to the sum.
template <int TILE>
__attribute__((always_inline)) inline void i8_row_tile_bf16(const uint16_t* xb, int64_t Kp, const int8_t* q,
                                                            float* sums) {
    __m512 acc_a[TILE], acc_b[TILE];
    for (int t = 0; t < TILE; ++t) acc_a[t] = acc_b[t] = _mm512_setzero_ps();
    const auto expand = [](const int8_t* p) {
        const __m128i* v = reinterpret_cast<const __m128i*>(p);
        return _mm512_cvtne2ps_pbh(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(v + 1))),
                                   _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(v))));
    };
    for (int64_t k = 0; k < Kp; k += 64) {
        const __m512bh wa = expand(q + k), wb = expand(q + k + 32);
#pragma GCC unroll 8
        for (int t = 0; t < TILE; ++t) {
            acc_a[t] = _mm512_dpbf16_ps(acc_a[t], wa, (__m512bh)_mm512_loadu_si512(xb + t * Kp + k));
            acc_b[t] = _mm512_dpbf16_ps(acc_b[t], wb, (__m512bh)_mm512_loadu_si512(xb + t * Kp + k + 32));
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < TILE; ++t) sums[t] = _mm512_reduce_add_ps(_mm512_add_ps(acc_a[t], acc_b[t]));
}
#endif

#endif

#ifdef I8_VECTOR
template <int TILE, typename T>
void i8_row_avx(const float* xf, const uint16_t* xb, int64_t M, int64_t Kp, const int8_t* q, float scale, float bias,
                T* out, int64_t N) {
    float sums[TILE];
    int64_t t0 = 0;
    for (; t0 + TILE <= M; t0 += TILE) {
#ifdef __AVX512BF16__
        if (TILE > 1 && xb != nullptr) i8_row_tile_bf16<TILE>(xb + t0 * Kp, Kp, q, sums);
        else i8_row_tile<TILE>(xf + t0 * Kp, Kp, q, sums);
#else
        i8_row_tile<TILE>(xf + t0 * Kp, Kp, q, sums);
#endif
        for (int t = 0; t < TILE; ++t) put(out + (t0 + t) * N, sums[t] * scale + bias);
    }
    for (; t0 < M; ++t0) {
        i8_row_tile<1>(xf + t0 * Kp, Kp, q, sums);
        put(out + t0 * N, sums[0] * scale + bias);
    }
}
#endif

template <typename T>
void i8_row_scalar(const float* xf, int64_t M, int64_t Kp, const int8_t* q, float scale, float bias, T* out,
                   int64_t N) {
    for (int64_t t = 0; t < M; ++t) {
        float acc = 0.f;
        for (int64_t k = 0; k < Kp; ++k) acc += static_cast<float>(q[k]) * xf[t * Kp + k];
        put(out + t * N, acc * scale + bias);
    }
}

template <typename T>
void i8_linear(const T* x, int64_t M, int64_t K, int64_t Kp, int64_t N, const int8_t* q, const float* scale,
               const float* bias, T* out, int64_t tile) {
    std::vector<float> xf(static_cast<size_t>(M * Kp));
    prepare_f32(x, M, K, Kp, xf.data());
    // bf16 activations in tiles of 2+ tokens take the vdpbf16ps path (exact products of bf16 x and int8 w).
    std::vector<uint16_t> xb;
    const bool bf16_tiles = sizeof(T) == 2 && tile > 1 && M > 1;
    if (bf16_tiles) {
        xb.resize(static_cast<size_t>(M * Kp));
        for (int64_t i = 0; i < M * Kp; ++i) xb[i] = to_bf16_bits(xf[i]);
    }
    const uint16_t* xbp = bf16_tiles ? xb.data() : nullptr;
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; ++n) {
        const float b = bias ? bias[n] : 0.f;
#ifdef I8_VECTOR
        switch (tile) {
            case 8: i8_row_avx<8>(xf.data(), xbp, M, Kp, q + n * Kp, scale[n], b, out + n, N); break;
            case 4: i8_row_avx<4>(xf.data(), xbp, M, Kp, q + n * Kp, scale[n], b, out + n, N); break;
            case 2: i8_row_avx<2>(xf.data(), xbp, M, Kp, q + n * Kp, scale[n], b, out + n, N); break;
            default: i8_row_avx<1>(xf.data(), xbp, M, Kp, q + n * Kp, scale[n], b, out + n, N);
        }
#else
        (void)tile;
        i8_row_scalar(xf.data(), M, Kp, q + n * Kp, scale[n], b, out + n, N);
#endif
    }
}

// ---- de-quantise whole weights (for long prefill chunks, where one GEMM beats re-expanding per row) ------

#ifdef __AVX512BF16__
// One q4 row -> bf16, 64 weights per step: the same d * q + m (a multiply, then an add: as the torch reference
// rounds) and round-to-nearest-even as the scalar loop below, in registers.
inline void q4_dequant_row_bf16(const uint8_t* w, const uint16_t* d, const uint16_t* m, int64_t K, uint16_t* out) {
    // A 32-block holds 16 distinct values, d * q + m for q in 0..15: compute those 16 once (multiply, add,
    // round to bf16) and look every weight up with one vpermw, instead of converting all 32 to float.
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    const __m512 iota = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const auto block = [iota](__m256i q, uint16_t db, uint16_t mb) {  // 32 nibbles (one per byte) -> 32 bf16
        const __m512 values = _mm512_add_ps(_mm512_mul_ps(iota, _mm512_set1_ps(_cvtsh_ss(db))), _mm512_set1_ps(_cvtsh_ss(mb)));
        const __m512i table = _mm512_castsi256_si512((__m256i)_mm512_cvtneps_pbh(values));
        return _mm512_permutexvar_epi16(_mm512_cvtepu8_epi16(q), table);
    };
    int64_t g = 0;
    for (; 64 * g + 64 <= K; ++g) {
        const __m256i bytes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 32 * g));
        const __m256i lo = _mm256_and_si256(bytes, low4);
        const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), low4);
        _mm512_storeu_si512(out + 64 * g, block(lo, d[2 * g], m[2 * g]));
        _mm512_storeu_si512(out + 64 * g + 32, block(hi, d[2 * g + 1], m[2 * g + 1]));
    }
    for (int64_t k = 64 * g; k < K; ++k) {  // the last, partial group
        const int64_t b = k / 32;
        const float q = static_cast<float>((w[32 * (b / 2) + k % 32] >> ((b % 2) * 4)) & 0xf);
        const float dq = half_to_float(d[b]) * q;
        store(out + k, dq + half_to_float(m[b]));
    }
}

// ---- q4 GEMM for a few to a few hundred tokens ------------------------------------------------------------
// Each thread expands a panel of weight rows to bf16 (sized to stay in L2), then multiplies it with every
// token, RB rows x TB tokens of fp32 accumulators at a time: each weight vector loaded feeds TB vdpbf16ps and
// each token vector RB. The weight is read from memory once and expanded once per call, where the per-row
// kernel re-expands it for every tile of tokens and expand_linear writes and re-reads a full-width copy.
constexpr int GEMM_RB = 4, GEMM_TB = 6;  // 24 accumulators + 4 weight vectors + 1 token vector: 29 of 32 registers
constexpr int64_t GEMM_PANEL_BYTES = 512 << 10;  // half an L2 of current x86 server cores: the panel and a token tile stay there

template <int RB, int TB>
void q4_gemm_block(const uint16_t* panel, const uint16_t* xb, int64_t Kp, float* sums) {
    __m512 acc[RB][TB];
    for (int r = 0; r < RB; ++r)
        for (int t = 0; t < TB; ++t) acc[r][t] = _mm512_setzero_ps();
    for (int64_t k = 0; k < Kp; k += 32) {
        __m512bh wv[RB];
        for (int r = 0; r < RB; ++r) wv[r] = (__m512bh)_mm512_loadu_si512(panel + r * Kp + k);
        for (int t = 0; t < TB; ++t) {
            const __m512bh xv = (__m512bh)_mm512_loadu_si512(xb + t * Kp + k);
            for (int r = 0; r < RB; ++r) acc[r][t] = _mm512_dpbf16_ps(acc[r][t], wv[r], xv);
        }
    }
    for (int r = 0; r < RB; ++r)
        for (int t = 0; t < TB; ++t) sums[r * TB + t] = _mm512_reduce_add_ps(acc[r][t]);
}

using GemmBlock = void (*)(const uint16_t*, const uint16_t*, int64_t, float*);
#define GEMM_ROW(R) \
    { &q4_gemm_block<R, 1>, &q4_gemm_block<R, 2>, &q4_gemm_block<R, 3>, &q4_gemm_block<R, 4>, &q4_gemm_block<R, 5>, \
      &q4_gemm_block<R, 6> }
const GemmBlock GEMM_BLOCKS[GEMM_RB][GEMM_TB] = {GEMM_ROW(1), GEMM_ROW(2), GEMM_ROW(3), GEMM_ROW(4)};  // [rb-1][tb-1]
#undef GEMM_ROW

void q4_gemm_bf16(const uint16_t* xb, int64_t M, int64_t Kp, int64_t N, const uint8_t* packed, const uint16_t* d,
                  const uint16_t* m, const float* bias, uint16_t* out) {
    const int64_t nb = Kp / 32;
    const int64_t rows = std::clamp<int64_t>(GEMM_PANEL_BYTES / (2 * Kp) / GEMM_RB * GEMM_RB, GEMM_RB, 64);
    const int64_t panels = (N + rows - 1) / rows;
#pragma omp parallel
    {
        static thread_local std::vector<uint16_t> panel;
        if (panel.size() < static_cast<size_t>(rows * Kp)) panel.resize(static_cast<size_t>(rows * Kp));
        float sums[GEMM_RB * GEMM_TB];
#pragma omp for schedule(static)
        for (int64_t p = 0; p < panels; ++p) {
            const int64_t n0 = p * rows, count = std::min(rows, N - n0);
            for (int64_t r = 0; r < count; ++r)
                q4_dequant_row_bf16(packed + (n0 + r) * (Kp / 2), d + (n0 + r) * nb, m + (n0 + r) * nb, Kp,
                                    panel.data() + r * Kp);
            for (int64_t t0 = 0; t0 < M; t0 += GEMM_TB) {
                const int64_t tb = std::min<int64_t>(GEMM_TB, M - t0);
                for (int64_t r0 = 0; r0 < count; r0 += GEMM_RB) {
                    const int64_t rb = std::min<int64_t>(GEMM_RB, count - r0);
                    GEMM_BLOCKS[rb - 1][tb - 1](panel.data() + r0 * Kp, xb + t0 * Kp, Kp, sums);
                    for (int64_t r = 0; r < rb; ++r) {
                        const float b = bias ? bias[n0 + r0 + r] : 0.f;
                        for (int64_t t = 0; t < tb; ++t) store(out + (t0 + t) * N + n0 + r0 + r, sums[r * tb + t] + b);
                    }
                }
            }
        }
    }
}
#endif

template <typename T>
void q4_dequant(const uint8_t* packed, const uint16_t* d, const uint16_t* m, int64_t N, int64_t K, int64_t Kp, T* out) {
    const int64_t nb = Kp / 32;
#ifdef __AVX512BF16__
    if constexpr (sizeof(T) == 2) {
#pragma omp parallel for schedule(static)
        for (int64_t n = 0; n < N; ++n)
            q4_dequant_row_bf16(packed + n * (Kp / 2), d + n * nb, m + n * nb, K, reinterpret_cast<uint16_t*>(out + n * K));
        return;
    }
#endif
#pragma omp parallel
    {
        std::vector<float> row(static_cast<size_t>(Kp));
#pragma omp for schedule(static)
        for (int64_t n = 0; n < N; ++n) {
            const uint8_t* w = packed + n * (Kp / 2);
            for (int64_t b = 0; b < nb; ++b) {  // block b: bytes of group b / 2, low nibbles if b is even
                const float db = half_to_float(d[n * nb + b]), mb = half_to_float(m[n * nb + b]);
                const uint8_t* bytes = w + 32 * (b / 2);
                const int shift = (b % 2) * 4;
                for (int64_t j = 0; j < 32; ++j) row[32 * b + j] = db * static_cast<float>((bytes[j] >> shift) & 0xf) + mb;
            }
            for (int64_t k = 0; k < K; ++k) store(out + n * K + k, row[k]);
        }
    }
}

template <typename T>
void i8_dequant(const int8_t* q, const float* scale, int64_t N, int64_t K, int64_t Kp, T* out) {
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; ++n)
        for (int64_t k = 0; k < K; ++k) store(out + n * K + k, static_cast<float>(q[n * Kp + k]) * scale[n]);
}

}  // namespace

extern "C" {

#define QUANT_ENTRY(SUFFIX, T)                                                                                   \
    void q4_linear_##SUFFIX(const void* x, int64_t M, int64_t K, int64_t Kp, int64_t N, const void* packed,     \
                            const void* d, const void* m, const void* bias, void* out, int64_t tile) {          \
        q4_linear(static_cast<const T*>(x), M, K, Kp, N, static_cast<const uint8_t*>(packed),                   \
                  static_cast<const uint16_t*>(d), static_cast<const uint16_t*>(m),                             \
                  static_cast<const float*>(bias), static_cast<T*>(out), tile);                                 \
    }                                                                                                           \
    void i8_linear_##SUFFIX(const void* x, int64_t M, int64_t K, int64_t Kp, int64_t N, const void* q,          \
                            const void* scale, const void* bias, void* out, int64_t tile) {                     \
        i8_linear(static_cast<const T*>(x), M, K, Kp, N, static_cast<const int8_t*>(q),                         \
                  static_cast<const float*>(scale), static_cast<const float*>(bias), static_cast<T*>(out), tile); \
    }                                                                                                           \
    void q4_dequant_##SUFFIX(const void* packed, const void* d, const void* m, int64_t N, int64_t K, int64_t Kp, \
                             void* out) {                                                                       \
        q4_dequant(static_cast<const uint8_t*>(packed), static_cast<const uint16_t*>(d),                        \
                   static_cast<const uint16_t*>(m), N, K, Kp, static_cast<T*>(out));                            \
    }                                                                                                           \
    void i8_dequant_##SUFFIX(const void* q, const void* scale, int64_t N, int64_t K, int64_t Kp, void* out) {   \
        i8_dequant(static_cast<const int8_t*>(q), static_cast<const float*>(scale), N, K, Kp, static_cast<T*>(out)); \
    }

// 1 where the q4 kernels have their vector form (AVX512_BF16), 0 where one token at a time is a scalar loop (then
// the int8-activation kernel, cpu_q4_vnni, takes every q4 step where it has a vector form).
void q4_vectorised(int64_t* out) {
#ifdef __AVX512BF16__
    *out = 1;
#else
    *out = 0;
#endif
}

QUANT_ENTRY(f32, float)
QUANT_ENTRY(bf16, uint16_t)

}  // extern "C"
