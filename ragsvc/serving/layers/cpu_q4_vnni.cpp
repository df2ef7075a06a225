// q4 weights x int8 activations: y = x W^T + b with vpdpbusd (AVX512_VNNI), or vpmaddubsw on AVX2: the Q4_1 x
// Q8_0 scheme.
// Loaded by cpu_q4_vnni.py (see there for why and for the numerics).
//
// Weights: packed once (q4_vnni_pack) from cpu_quant.cpp's q4 layout (w = d * q + m per 32-block, q in 0..15)
// into the VNNI layout: vpdpbusd adds 4 byte products into each of 16 int32 lanes, so 16 rows share a vector, 4
// consecutive k per lane; each lane sums one row and each token's 4 bytes are broadcast. After the 8 steps of a
// 32-block the lane's int32 sum is that row's block dot product, which gets its scales in fp32; the fp32 sums
// are the outputs, 16 rows per vector, with no horizontal reduction. Stored nibble-packed (step j of a block in
// the low nibbles, step j + 4 in the high ones: the q4 size), with d and m as fp16 (groups, nb, 16); a call
// unpacks a cache-sized panel of it, two ops per 128 weights, where the q4 layout needed a 16 x 16 transpose.
//
// Activations: each token's 32-blocks are rounded to int8 with their own scale, x ~ sx * xq (|xq| <= 127), and
// xs = sx * sum(xq) is kept per block. Per block, sum(w * x) = d * sx * sum(q * xq) + m * xs: the first sum is
// u8 x s8 in int32 (exact), the second needs no product at all.
#include "cpu_prelude.h"

#include <algorithm>
#include <array>
#include <utility>

#include <omp.h>

namespace {

// Every 32-block of one token -> xq in natural order (Kp bytes), sx and xs per block (nb floats).
template <typename T>
void quantise_row(const T* x, int64_t K, int64_t nb, int8_t* xq, float* sx, float* xs) {
    for (int64_t b = 0; b < nb; ++b) {
        float v[32], amax = 0.f;
        for (int i = 0; i < 32; ++i) {
            const int64_t k = 32 * b + i;
            v[i] = k < K ? load(x[k]) : 0.f;
            amax = std::max(amax, std::fabs(v[i]));
        }
        const float inv = amax > 0.f ? 127.f / amax : 0.f;
        int sum = 0;
        for (int i = 0; i < 32; ++i) {
            const int q = static_cast<int>(std::nearbyint(v[i] * inv));
            xq[32 * b + i] = static_cast<int8_t>(q);
            sum += q;
        }
        sx[b] = amax / 127.f;
        xs[b] = sx[b] * static_cast<float>(sum);
    }
}

// Weight q (0..15) of row n, column k in the packed layout (scalar paths).
inline int packed_q(const uint8_t* wl, int64_t nb, int64_t n, int64_t k) {
    const int64_t b = k / 32, j = (k % 32) / 4;
    const uint8_t byte = wl[((n / 16 * nb + b) * 4 + j % 4) * 64 + (n % 16) * 4 + k % 4];
    return (byte >> (4 * (j / 4))) & 0xf;
}

// 16 weight rows (`valid` of them real, the rest zero) of the q4 layout -> one group of the packed layout, scalar
// (CPUs without AVX-512; the vector form below does the same with a register transpose).
void pack_group_scalar(const uint8_t* packed, const uint16_t* d, const uint16_t* m, int64_t Kp, int64_t valid,
                       uint8_t* wl, uint16_t* dl, uint16_t* ml) {
    const int64_t nb = Kp / 32;
    std::memset(wl, 0, static_cast<size_t>(8 * Kp));
    for (int64_t i = 0; i < 16; ++i)
        for (int64_t b = 0; b < nb; ++b) {
            dl[b * 16 + i] = i < valid ? d[i * nb + b] : 0;
            ml[b * 16 + i] = i < valid ? m[i * nb + b] : 0;
            for (int64_t k = 0; k < 32 && i < valid; ++k) {
                const int64_t j = k / 4;
                const int q = (packed[i * (Kp / 2) + 32 * (b / 2) + k] >> (4 * (b % 2))) & 0xf;
                wl[(b * 4 + j % 4) * 64 + i * 4 + k % 4] |= static_cast<uint8_t>(q << (4 * (j / 4)));
            }
        }
}

// Scalar path (CPUs without AVX2 or AVX512_VNNI: the library still builds and gives the same sums; the caller
// keeps the bf16 kernels there, which are faster).
template <typename T>
void linear_scalar(const T* x, int64_t M, int64_t K, int64_t Kp, int64_t N, const uint8_t* wl, const uint16_t* dl,
                   const uint16_t* ml, const float* bias, T* out) {
    const int64_t nb = Kp / 32;
    std::vector<int8_t> xq(static_cast<size_t>(Kp));
    std::vector<float> sx(static_cast<size_t>(nb)), xs(static_cast<size_t>(nb));
    for (int64_t t = 0; t < M; ++t) {
        quantise_row(x + t * K, K, nb, xq.data(), sx.data(), xs.data());
        for (int64_t n = 0; n < N; ++n) {
            float acc = 0.f;
            for (int64_t b = 0; b < nb; ++b) {
                int dot = 0;
                for (int64_t k = 32 * b; k < 32 * b + 32; ++k) dot += packed_q(wl, nb, n, k) * xq[k];
                const int64_t lane = (n / 16 * nb + b) * 16 + n % 16;
                acc += half_to_float(dl[lane]) * sx[b] * static_cast<float>(dot) + half_to_float(ml[lane]) * xs[b];
            }
            store(out + t * N + n, acc + (bias ? bias[n] : 0.f));
        }
    }
}

#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
#define Q4I8_AVX512 1
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define Q4I8_AVX2 1
#endif

#ifdef Q4I8_AVX512
// Every token -> xq (M, Kp) int8 in natural order, sx and xs (M, nb): full blocks 16 values per instruction,
// the block that K cuts and the zero padding past it by quantise_row.
template <typename T>
void prepare_tokens(const T* x, int64_t M, int64_t K, int64_t Kp, int8_t* xq, float* sx, float* xs) {
    const int64_t nb = Kp / 32, full = K / 32;
#pragma omp parallel for schedule(static) if (M * Kp > (1 << 15))
    for (int64_t t = 0; t < M; ++t) {
        const T* row = x + t * K;
        for (int64_t b = 0; b < full; ++b) {
            const __m512 v0 = load16(row + 32 * b), v1 = load16(row + 32 * b + 16);
            const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
            const __m512 inv = _mm512_set1_ps(amax > 0.f ? 127.f / amax : 0.f);
            const __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, inv)), q1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, inv));
            _mm_storeu_si128(reinterpret_cast<__m128i*>(xq + t * Kp + 32 * b), _mm512_cvtepi32_epi8(q0));
            _mm_storeu_si128(reinterpret_cast<__m128i*>(xq + t * Kp + 32 * b + 16), _mm512_cvtepi32_epi8(q1));
            sx[t * nb + b] = amax / 127.f;
            xs[t * nb + b] = sx[t * nb + b] * static_cast<float>(_mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1)));
        }
        quantise_row(row + 32 * full, K - 32 * full, nb - full, xq + t * Kp + 32 * full, sx + t * nb + full,
                     xs + t * nb + full);
    }
}

// 16 vectors of 16 dwords -> their transpose (out[c] lane r = in[r] lane c), in place.
inline void transpose16(__m512i* z) {
    __m512i t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_epi32(z[i], z[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(z[i], z[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {  // 128-bit lane L of z[i + c]: column 4L + c of rows i..i+3
        z[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
        z[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
        z[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
        z[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    for (int c = 0; c < 4; ++c) {
        const __m512i p0 = _mm512_shuffle_i32x4(z[c], z[4 + c], 0x44), p1 = _mm512_shuffle_i32x4(z[c], z[4 + c], 0xee);
        const __m512i p2 = _mm512_shuffle_i32x4(z[8 + c], z[12 + c], 0x44), p3 = _mm512_shuffle_i32x4(z[8 + c], z[12 + c], 0xee);
        t[c] = _mm512_shuffle_i32x4(p0, p2, 0x88);
        t[4 + c] = _mm512_shuffle_i32x4(p0, p2, 0xdd);
        t[8 + c] = _mm512_shuffle_i32x4(p1, p3, 0x88);
        t[12 + c] = _mm512_shuffle_i32x4(p1, p3, 0xdd);
    }
    for (int i = 0; i < 16; ++i) z[i] = t[i];
}

// 16 weight rows (`valid` of them real, the rest zero) of the q4 layout -> one group of the packed layout.
void pack_group(const uint8_t* packed, const uint16_t* d, const uint16_t* m, int64_t Kp, int64_t valid, uint8_t* wl,
                uint16_t* dl, uint16_t* ml) {
    const int64_t nb = Kp / 32;
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    for (int64_t g = 0; g < Kp / 64; ++g) {
        __m512i z[16];
        for (int64_t i = 0; i < 16; ++i) {  // row i's 64 weights of group g, in k order
            const __m256i bytes = i < valid ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(packed + i * (Kp / 2) + 32 * g))
                                            : _mm256_setzero_si256();
            const __m256i lo = _mm256_and_si256(bytes, low4), hi = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), low4);
            z[i] = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
        }
        transpose16(z);  // z[s]: step s of the group (4 k), lane i = row i; steps 0-7 block 2g, 8-15 block 2g + 1
        for (int h = 0; h < 2; ++h)
            for (int j = 0; j < 4; ++j)
                _mm512_storeu_si512(wl + ((2 * g + h) * 4 + j) * 64,
                                    _mm512_or_si512(z[8 * h + j], _mm512_slli_epi16(z[8 * h + j + 4], 4)));
    }
    for (int64_t b = 0; b < nb; ++b)
        for (int64_t i = 0; i < 16; ++i) {
            dl[b * 16 + i] = i < valid ? d[i * nb + b] : 0;
            ml[b * 16 + i] = i < valid ? m[i * nb + b] : 0;
        }
}

// One packed group -> the panel's bytes (nb * 8 vectors, one per 4 k) and fp32 d, m (nb, 16).
void unpack_group(const uint8_t* wl, const uint16_t* dl, const uint16_t* ml, int64_t nb, uint8_t* out, float* df,
                  float* mf) {
    const __m512i low4 = _mm512_set1_epi8(0x0f);
    for (int64_t b = 0; b < nb; ++b) {
        for (int j = 0; j < 4; ++j) {
            const __m512i v = _mm512_loadu_si512(wl + (b * 4 + j) * 64);
            _mm512_storeu_si512(out + (8 * b + j) * 64, _mm512_and_si512(v, low4));
            _mm512_storeu_si512(out + (8 * b + j + 4) * 64, _mm512_and_si512(_mm512_srli_epi16(v, 4), low4));
        }
        _mm512_storeu_ps(df + 16 * b, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(dl + 16 * b))));
        _mm512_storeu_ps(mf + 16 * b, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(ml + 16 * b))));
    }
}

// RB groups of 16 rows x TB tokens. Per 4 k: RB weight vectors, each token's 4 bytes broadcast, RB * TB vpdpbusd
// into int32 sums (one per row); per 32-block those become fp32 with d * sx and get m * xs, so the fp32 sums
// are the outputs themselves, 16 rows per vector, with no horizontal reduction.
template <int RB, int TB>
void vnni_block(const uint8_t* wl, const float* dl, const float* ml, int64_t Kp, const int8_t* xq, const float* sx,
                const float* xs, float* sums) {
    const int64_t nb = Kp / 32;
    __m512 acc[RB][TB];
    for (int r = 0; r < RB; ++r)
        for (int t = 0; t < TB; ++t) acc[r][t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
        __m512i dot[RB][TB];
        for (int r = 0; r < RB; ++r)
            for (int t = 0; t < TB; ++t) dot[r][t] = _mm512_setzero_si512();
#pragma GCC unroll 8
        for (int j = 0; j < 8; ++j) {
            const int64_t k4 = 8 * b + j;
            __m512i wv[RB];
            for (int r = 0; r < RB; ++r) wv[r] = _mm512_loadu_si512(wl + r * 16 * Kp + 64 * k4);
            for (int t = 0; t < TB; ++t) {
                int32_t word;
                std::memcpy(&word, xq + t * Kp + 4 * k4, 4);
                const __m512i xv = _mm512_set1_epi32(word);
                for (int r = 0; r < RB; ++r) dot[r][t] = _mm512_dpbusd_epi32(dot[r][t], wv[r], xv);
            }
        }
        for (int r = 0; r < RB; ++r) {
            const __m512 dv = _mm512_loadu_ps(dl + (r * nb + b) * 16), mv = _mm512_loadu_ps(ml + (r * nb + b) * 16);
            for (int t = 0; t < TB; ++t) {
                const __m512 scale = _mm512_mul_ps(dv, _mm512_set1_ps(sx[t * nb + b]));
                acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[r][t]), scale, acc[r][t]);
                acc[r][t] = _mm512_fmadd_ps(mv, _mm512_set1_ps(xs[t * nb + b]), acc[r][t]);
            }
        }
    }
    for (int r = 0; r < RB; ++r)
        for (int t = 0; t < TB; ++t) _mm512_storeu_ps(sums + 16 * (r * TB + t), acc[r][t]);
}

// Bytes ahead of the load that direct_group prefetches: the hardware prefetcher alone left one thread's stream
// short of what memory gives. On the AMX Xeon, a decode step's q4 linears of Qwen2.5-1.5B took 47-49 ms with 1-4
// KB against 55-59 ms without (1 token; alike or better at 4-16 tokens). Past a group's end it reaches into the
// next one.
constexpr int64_t DIRECT_PREFETCH = 2048;

// A few tokens (decode): one 16-row group straight from the packed layout, the nibbles split in registers, as
// the AVX2 form's direct_group below does and for the same reason: at a few tokens streaming the weight is the
// whole cost, and unpacking a panel first leaves memory idle while a thread multiplies. A packed step's low and
// high nibbles go to two int32 sums (two dependency chains instead of one); integer addition is exact, so their
// total, and the fp32 steps per block after it, are bit-identical to the panel path.
template <int TB>
void direct_group(const uint8_t* wl, const uint16_t* dl, const uint16_t* ml, int64_t Kp, const int8_t* xq,
                  const float* sx, const float* xs, float* sums) {
    const int64_t nb = Kp / 32;
    const __m512i low4 = _mm512_set1_epi8(0x0f);
    __m512 acc[TB];
    for (int t = 0; t < TB; ++t) acc[t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
        __m512i dlo[TB], dhi[TB];
        for (int t = 0; t < TB; ++t) dlo[t] = dhi[t] = _mm512_setzero_si512();
#pragma GCC unroll 4
        for (int j = 0; j < 4; ++j) {  // packed step j holds steps j (low nibbles) and j + 4 (high ones)
            _mm_prefetch(reinterpret_cast<const char*>(wl + (b * 4 + j) * 64 + DIRECT_PREFETCH), _MM_HINT_T0);
            const __m512i v = _mm512_loadu_si512(wl + (b * 4 + j) * 64);
            const __m512i lo = _mm512_and_si512(v, low4), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), low4);
            for (int t = 0; t < TB; ++t) {
                int32_t wa, wb;
                std::memcpy(&wa, xq + t * Kp + 4 * (8 * b + j), 4);
                std::memcpy(&wb, xq + t * Kp + 4 * (8 * b + j + 4), 4);
                dlo[t] = _mm512_dpbusd_epi32(dlo[t], lo, _mm512_set1_epi32(wa));
                dhi[t] = _mm512_dpbusd_epi32(dhi[t], hi, _mm512_set1_epi32(wb));
            }
        }
        const __m512 dv = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(dl + 16 * b)));
        const __m512 mv = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(ml + 16 * b)));
        for (int t = 0; t < TB; ++t) {
            const __m512 sum = _mm512_cvtepi32_ps(_mm512_add_epi32(dlo[t], dhi[t]));
            acc[t] = _mm512_fmadd_ps(sum, _mm512_mul_ps(dv, _mm512_set1_ps(sx[t * nb + b])), acc[t]);
            acc[t] = _mm512_fmadd_ps(mv, _mm512_set1_ps(xs[t * nb + b]), acc[t]);
        }
    }
    for (int t = 0; t < TB; ++t) _mm512_storeu_ps(sums + 16 * t, acc[t]);
}

// 16 sums of rows n0.. for one token (+ bias) -> out, the rows past N left out.
template <typename T>
inline void put_rows(const float* v, const float* bias, int64_t n0, int64_t N, T* out) {
    if (n0 + 16 <= N) {  // all 16 rows real: one vector, rounded as store() does
        __m512 sum = _mm512_loadu_ps(v);
        if (bias) sum = _mm512_add_ps(sum, _mm512_loadu_ps(bias + n0));
        store16(out + n0, sum);
        return;
    }
    for (int64_t i = 0; i < 16 && n0 + i < N; ++i) store(out + n0 + i, v[i] + (bias ? bias[n0 + i] : 0.f));
}

#endif

#ifdef Q4I8_AVX2
// The AVX2 form (CPUs without AVX512_VNNI: Zen 2 and 3, Haswell to Skylake client) reads the same packed layout.
// A 256-bit vector holds 8 of a group's 16 rows (4 k each), so each 16-row group is two halves. vpdpbusd
// becomes vpmaddubsw, which adds pairs of u8 x s8 products into int16; those are added across the 8 steps of
// a 32-block, and one vpmaddwd against ones widens them to each row's int32 block sum. No int16 sum can
// overflow: |q * xq| <= 15 * 127, two products per pair, 8 pairs per row per block: 30,480 < 32,767.

// Every token -> xq, sx and xs, rounded as quantise_row rounds (cvtps rounds to nearest even, as nearbyint does
// in the default mode): full blocks 8 values per instruction, the block that K cuts and the padding by
// quantise_row.
template <typename T>
void prepare_tokens(const T* x, int64_t M, int64_t K, int64_t Kp, int8_t* xq, float* sx, float* xs) {
    const int64_t nb = Kp / 32, full = K / 32;
    const __m256 sign = _mm256_set1_ps(-0.f);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);  // undoes the packs' per-lane interleave
#pragma omp parallel for schedule(static) if (M * Kp > (1 << 15))
    for (int64_t t = 0; t < M; ++t) {
        const T* row = x + t * K;
        for (int64_t b = 0; b < full; ++b) {
            __m256 v[4];
            for (int i = 0; i < 4; ++i) v[i] = load8(row + 32 * b + 8 * i);
            const __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
                                           _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])));
            __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
            h = _mm_max_ps(h, _mm_movehl_ps(h, h));
            const float amax = _mm_cvtss_f32(_mm_max_ss(h, _mm_movehdup_ps(h)));
            const __m256 inv = _mm256_set1_ps(amax > 0.f ? 127.f / amax : 0.f);
            __m256i q[4];
            for (int i = 0; i < 4; ++i) q[i] = _mm256_cvtps_epi32(_mm256_mul_ps(v[i], inv));
            const __m256i bytes = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(xq + t * Kp + 32 * b), _mm256_permutevar8x32_epi32(bytes, order));
            const __m256i s4 = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
            __m128i s = _mm_add_epi32(_mm256_castsi256_si128(s4), _mm256_extracti128_si256(s4, 1));
            s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
            s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
            sx[t * nb + b] = amax / 127.f;
            xs[t * nb + b] = sx[t * nb + b] * static_cast<float>(_mm_cvtsi128_si32(s));
        }
        quantise_row(row + 32 * full, K - 32 * full, nb - full, xq + t * Kp + 32 * full, sx + t * nb + full,
                     xs + t * nb + full);
    }
}

// One packed group -> the panel's bytes (nb * 8 steps of 64 bytes) and fp32 d, m (nb, 16).
void unpack_group(const uint8_t* wl, const uint16_t* dl, const uint16_t* ml, int64_t nb, uint8_t* out, float* df,
                  float* mf) {
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    for (int64_t b = 0; b < nb; ++b) {
        for (int j = 0; j < 4; ++j)
            for (int h = 0; h < 2; ++h) {
                const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wl + (b * 4 + j) * 64 + 32 * h));
                _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + (8 * b + j) * 64 + 32 * h), _mm256_and_si256(v, low4));
                _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + (8 * b + j + 4) * 64 + 32 * h),
                                    _mm256_and_si256(_mm256_srli_epi16(v, 4), low4));
            }
        for (int h = 0; h < 2; ++h) {
            _mm256_storeu_ps(df + 16 * b + 8 * h, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(dl + 16 * b + 8 * h))));
            _mm256_storeu_ps(mf + 16 * b + 8 * h, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(ml + 16 * b + 8 * h))));
        }
    }
}

// RB groups of 16 rows (2 * RB halves of 8) x TB tokens: int16 block sums as above, then d * sx and m * xs in
// fp32 as in the AVX-512 form; the outputs are the fp32 sums, 16 rows per group.
template <int RB, int TB>
void vnni_block(const uint8_t* wl, const float* dl, const float* ml, int64_t Kp, const int8_t* xq, const float* sx,
                const float* xs, float* sums) {
    constexpr int H = 2 * RB;
    const int64_t nb = Kp / 32;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[H][TB];
    for (int h = 0; h < H; ++h)
        for (int t = 0; t < TB; ++t) acc[h][t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
        __m256i dot[H][TB];
        for (int h = 0; h < H; ++h)
            for (int t = 0; t < TB; ++t) dot[h][t] = _mm256_setzero_si256();
#pragma GCC unroll 8
        for (int j = 0; j < 8; ++j) {
            const int64_t k4 = 8 * b + j;
            __m256i wv[H];
            for (int h = 0; h < H; ++h)
                wv[h] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wl + (h / 2) * 16 * Kp + 64 * k4 + 32 * (h % 2)));
            for (int t = 0; t < TB; ++t) {
                int32_t word;
                std::memcpy(&word, xq + t * Kp + 4 * k4, 4);
                const __m256i xv = _mm256_set1_epi32(word);
                for (int h = 0; h < H; ++h) dot[h][t] = _mm256_add_epi16(dot[h][t], _mm256_maddubs_epi16(wv[h], xv));
            }
        }
        for (int h = 0; h < H; ++h) {
            const int64_t at = ((h / 2) * nb + b) * 16 + 8 * (h % 2);
            const __m256 dv = _mm256_loadu_ps(dl + at), mv = _mm256_loadu_ps(ml + at);
            for (int t = 0; t < TB; ++t) {
                const __m256 sum = _mm256_cvtepi32_ps(_mm256_madd_epi16(dot[h][t], ones));
                acc[h][t] = _mm256_fmadd_ps(sum, _mm256_mul_ps(dv, _mm256_set1_ps(sx[t * nb + b])), acc[h][t]);
                acc[h][t] = _mm256_fmadd_ps(mv, _mm256_set1_ps(xs[t * nb + b]), acc[h][t]);
            }
        }
    }
    for (int r = 0; r < RB; ++r)
        for (int t = 0; t < TB; ++t)
            for (int h = 0; h < 2; ++h) _mm256_storeu_ps(sums + 16 * (r * TB + t) + 8 * h, acc[2 * r + h][t]);
}

// A few tokens (decode): one 16-row group straight from the packed layout, the nibbles split in registers.
// Streaming the weight is the whole cost here, and the panel path's unpack-then-multiply phases leave memory
// idle while a thread multiplies; this keeps loads and products interleaved. The integer sums are the same,
// and so are the fp32 steps per block: the result is bit-identical to the panel path.
template <int TB>
void direct_group(const uint8_t* wl, const uint16_t* dl, const uint16_t* ml, int64_t Kp, const int8_t* xq,
                  const float* sx, const float* xs, float* sums) {
    const int64_t nb = Kp / 32;
    const __m256i ones = _mm256_set1_epi16(1), low4 = _mm256_set1_epi8(0x0f);
    __m256 acc[2][TB];
    for (int h = 0; h < 2; ++h)
        for (int t = 0; t < TB; ++t) acc[h][t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
        __m256i dot[2][TB];
        for (int h = 0; h < 2; ++h)
            for (int t = 0; t < TB; ++t) dot[h][t] = _mm256_setzero_si256();
#pragma GCC unroll 4
        for (int j = 0; j < 4; ++j) {  // packed step j holds steps j (low nibbles) and j + 4 (high ones)
            for (int h = 0; h < 2; ++h) {
                const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wl + (b * 4 + j) * 64 + 32 * h));
                const __m256i lo = _mm256_and_si256(v, low4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
                for (int t = 0; t < TB; ++t) {
                    int32_t wa, wb;
                    std::memcpy(&wa, xq + t * Kp + 4 * (8 * b + j), 4);
                    std::memcpy(&wb, xq + t * Kp + 4 * (8 * b + j + 4), 4);
                    dot[h][t] = _mm256_add_epi16(dot[h][t], _mm256_maddubs_epi16(lo, _mm256_set1_epi32(wa)));
                    dot[h][t] = _mm256_add_epi16(dot[h][t], _mm256_maddubs_epi16(hi, _mm256_set1_epi32(wb)));
                }
            }
        }
        for (int h = 0; h < 2; ++h) {
            const __m256 dv = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(dl + 16 * b + 8 * h)));
            const __m256 mv = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(ml + 16 * b + 8 * h)));
            for (int t = 0; t < TB; ++t) {
                const __m256 sum = _mm256_cvtepi32_ps(_mm256_madd_epi16(dot[h][t], ones));
                acc[h][t] = _mm256_fmadd_ps(sum, _mm256_mul_ps(dv, _mm256_set1_ps(sx[t * nb + b])), acc[h][t]);
                acc[h][t] = _mm256_fmadd_ps(mv, _mm256_set1_ps(xs[t * nb + b]), acc[h][t]);
            }
        }
    }
    for (int t = 0; t < TB; ++t)
        for (int h = 0; h < 2; ++h) _mm256_storeu_ps(sums + 16 * t + 8 * h, acc[h][t]);
}

// 16 sums of rows n0.. for one token (+ bias) -> out, the rows past N left out.
template <typename T>
inline void put_rows(const float* v, const float* bias, int64_t n0, int64_t N, T* out) {
    for (int64_t i = 0; i < 16 && n0 + i < N; ++i) store(out + n0 + i, v[i] + (bias ? bias[n0 + i] : 0.f));
}

// 16-row groups x tokens of the AVX2 block. 1 x 6 keeps 12 int16 sums in registers (the fp32 ones are touched once
// per block); on a Zen 3 it was 10-15% faster than 1 x 3, 2 x 2 or 2 x 3 from 32 tokens, alike at 1 and 8.
#ifndef VNNI_RB
#define VNNI_RB 1
#define VNNI_TB 6
#endif
#endif
#if defined(Q4I8_AVX512) || defined(Q4I8_AVX2)
#ifndef VNNI_RB  // -DVNNI_RB=.. -DVNNI_TB=.. build other blockings to compare (2x4 to 4x3 measured alike on Zen 4)
#define VNNI_RB 2
#define VNNI_TB 6
#endif
// Steps of at most DIRECT_LIMIT tokens read the packed weight directly, DIRECT_TOKENS at a time (a 16-row group
// is re-read from L1/L2 for each further tile). On the Zen 3 (AVX2), 24 distinct 17920 x 1536 weights (330 MB,
// far past L3) streamed at 19-20 GB/s at 1 token against 15-16 through the panel, and 1.4x as fast at 3 and 4
// tokens. On the AMX Xeon (AVX-512), a decode step's q4 linears of Qwen2.5-1.5B (28 layers, 0.8 GB) took
// 56-65 ms against 87-121 through the panel at 1 token, 65-72 against 115 at 5, 76-92 against 136-164 at 8,
// and 122-127 against 163-358 at 12 (tiles of 8).
#ifdef Q4I8_AVX512
constexpr int64_t DIRECT_TOKENS = 8, DIRECT_LIMIT = 16;
#else
constexpr int64_t DIRECT_TOKENS = 4, DIRECT_LIMIT = 4;
#endif
using Direct = void (*)(const uint8_t*, const uint16_t*, const uint16_t*, int64_t, const int8_t*, const float*,
                        const float*, float*);
template <size_t... T>
constexpr std::array<Direct, sizeof...(T)> direct_table(std::index_sequence<T...>) { return {&direct_group<T + 1>...}; }
const auto DIRECT = direct_table(std::make_index_sequence<DIRECT_TOKENS>{});

constexpr int RB = VNNI_RB, TB = VNNI_TB;  // RB * TB int32 and fp32 sums, RB weight vectors, one broadcast
constexpr int64_t PANEL_BYTES = 256 << 10;  // expanded weight bytes per panel: a quarter of a current L2

using Block = void (*)(const uint8_t*, const float*, const float*, int64_t, const int8_t*, const float*, const float*,
                       float*);
template <int R, size_t... T>
constexpr std::array<Block, sizeof...(T)> block_row(std::index_sequence<T...>) { return {&vnni_block<R, T + 1>...}; }
template <size_t... R>
constexpr std::array<std::array<Block, TB>, RB> block_table(std::index_sequence<R...>) {
    return {block_row<R + 1>(std::make_index_sequence<TB>{})...};
}
const auto BLOCKS = block_table(std::make_index_sequence<RB>{});  // [rb - 1][tb - 1]

// The weight is read once: each thread unpacks a panel of 16-row groups into a cache-resident buffer, then
// multiplies it with every token tile.
template <typename T>
void linear_vnni(const T* x, int64_t M, int64_t K, int64_t Kp, int64_t N, const uint8_t* wl, const uint16_t* dl,
                 const uint16_t* ml, const float* bias, T* out) {
    const int64_t nb = Kp / 32, groups = (N + 15) / 16;
    // Kept between calls (grown, never shrunk): a prompt chunk's int8 activations are megabytes, and a fresh
    // allocation of that size is a fresh mapping the kernel must fault in and zero on every call.
    // Thread-local to the calling thread, so read through these pointers inside the parallel region.
    static thread_local std::vector<int8_t> xq_buf;
    static thread_local std::vector<float> sx_buf, xs_buf;
    if (xq_buf.size() < static_cast<size_t>(M * Kp)) xq_buf.resize(static_cast<size_t>(M * Kp));
    if (sx_buf.size() < static_cast<size_t>(M * nb)) sx_buf.resize(static_cast<size_t>(M * nb)), xs_buf.resize(sx_buf.size());
    int8_t* const xq = xq_buf.data();
    float* const sx = sx_buf.data();
    float* const xs = xs_buf.data();
    prepare_tokens(x, M, K, Kp, xq, sx, xs);
    if (M <= DIRECT_LIMIT) {
#pragma omp parallel for schedule(static)
        for (int64_t g = 0; g < groups; ++g) {
            alignas(32) float sums[16 * DIRECT_TOKENS];
            for (int64_t t0 = 0; t0 < M; t0 += DIRECT_TOKENS) {
                const int64_t tb = std::min(DIRECT_TOKENS, M - t0);
                DIRECT[tb - 1](wl + g * 8 * Kp, dl + g * 16 * nb, ml + g * 16 * nb, Kp, xq + t0 * Kp, sx + t0 * nb,
                               xs + t0 * nb, sums);
                for (int64_t t = 0; t < tb; ++t) put_rows(sums + 16 * t, bias, 16 * g, N, out + (t0 + t) * N);
            }
        }
        return;
    }
    // groups per panel: cache-sized, but at least one panel per thread (a k/v projection has only 16 groups)
    const int64_t threads = omp_get_max_threads(), per_thread = (groups + threads - 1) / threads;
    const int64_t per_panel = std::clamp<int64_t>(std::min(PANEL_BYTES / (16 * Kp), (per_thread + RB - 1) / RB * RB) / RB * RB,
                                                  RB, 8 * RB);
    const int64_t panels = (groups + per_panel - 1) / per_panel;
#pragma omp parallel
    {
        static thread_local std::vector<uint8_t> panel;
        static thread_local std::vector<float> df, mf;
        if (panel.size() < static_cast<size_t>(per_panel * 16 * Kp)) panel.resize(static_cast<size_t>(per_panel * 16 * Kp));
        if (df.size() < static_cast<size_t>(per_panel * 16 * nb)) df.resize(static_cast<size_t>(per_panel * 16 * nb)), mf.resize(df.size());
        alignas(64) float sums[RB * TB * 16];
#pragma omp for schedule(static)
        for (int64_t p = 0; p < panels; ++p) {
            const int64_t g0 = p * per_panel, count = std::min(per_panel, groups - g0);
            for (int64_t g = 0; g < count; ++g)
                unpack_group(wl + (g0 + g) * 8 * Kp, dl + (g0 + g) * 16 * nb, ml + (g0 + g) * 16 * nb, nb,
                             panel.data() + g * 16 * Kp, df.data() + g * 16 * nb, mf.data() + g * 16 * nb);
            for (int64_t t0 = 0; t0 < M; t0 += TB) {
                const int64_t tb = std::min<int64_t>(TB, M - t0);
                for (int64_t r0 = 0; r0 < count; r0 += RB) {
                    const int64_t rb = std::min<int64_t>(RB, count - r0);
                    BLOCKS[rb - 1][tb - 1](panel.data() + r0 * 16 * Kp, df.data() + r0 * 16 * nb, mf.data() + r0 * 16 * nb,
                                           Kp, xq + t0 * Kp, sx + t0 * nb, xs + t0 * nb, sums);
                    for (int64_t r = 0; r < rb; ++r)
                        for (int64_t t = 0; t < tb; ++t)
                            put_rows(sums + 16 * (r * tb + t), bias, 16 * (g0 + r0 + r), N, out + (t0 + t) * N);
                }
            }
        }
    }
}
#endif

template <typename T>
void linear(const T* x, int64_t M, int64_t K, int64_t Kp, int64_t N, const uint8_t* wl, const uint16_t* dl,
            const uint16_t* ml, const float* bias, T* out) {
#if defined(Q4I8_AVX512) || defined(Q4I8_AVX2)
    linear_vnni(x, M, K, Kp, N, wl, dl, ml, bias, out);
#else
    linear_scalar(x, M, K, Kp, N, wl, dl, ml, bias, out);
#endif
}

#ifdef Q4I8_AVX512
// ---- int8 weights (quant.py's int8 format: w = scale[n] * q, q in -127..127) x int8 activations, few tokens ----
// Layout: rows in groups of 16; per 4 k one vector of the 16 rows' 4 signed bytes (vpdpbusd's operand order), and
// per group and 32-block the 16 rows' 128 * sum(q) as int32. vpdpbusd multiplies unsigned by signed bytes, so the
// activations go in as xq + 128 (1..255) and each block's sum drops 128 * sum(q) again: exact in int32. Per block
// the int32 sum gets the token's scale sx in fp32; the row's scale multiplies the total.
void pack_i8_group(const int8_t* q, int64_t Kp, int64_t valid, int8_t* wl, int32_t* corr) {
    const __m512i ones = _mm512_set1_epi8(1);
    for (int64_t b = 0; b < Kp / 32; b += 2) {  // 64 k (two blocks) at a time: one dword transpose
        __m512i z[16];
        for (int64_t i = 0; i < 16; ++i)
            z[i] = i < valid ? _mm512_loadu_si512(q + i * Kp + 32 * b) : _mm512_setzero_si512();
        transpose16(z);  // z[s]: k4-step s of the 64, lane i = row i's 4 bytes
        for (int h = 0; h < 2; ++h) {
            __m512i sum = _mm512_setzero_si512();
            for (int s = 0; s < 8; ++s) {
                _mm512_storeu_si512(wl + (8 * (b + h) + s) * 64, z[8 * h + s]);
                sum = _mm512_dpbusd_epi32(sum, ones, z[8 * h + s]);  // each row's 4 signed bytes, summed
            }
            _mm512_storeu_si512(corr + 16 * (b + h), _mm512_slli_epi32(sum, 7));  // 128 * sum(q)
        }
    }
}

template <int TB>
void direct_i8(const int8_t* wl, const int32_t* corr, int64_t Kp, const uint8_t* xu, const float* sx, float* sums) {
    const int64_t nb = Kp / 32;
    __m512 acc[TB];
    for (int t = 0; t < TB; ++t) acc[t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
        __m512i d0[TB], d1[TB];
        for (int t = 0; t < TB; ++t) d0[t] = d1[t] = _mm512_setzero_si512();
#pragma GCC unroll 4
        for (int j = 0; j < 8; j += 2) {  // two int32 chains: steps j and j + 1
            _mm_prefetch(reinterpret_cast<const char*>(wl + (8 * b + j) * 64 + DIRECT_PREFETCH), _MM_HINT_T0);
            const __m512i v0 = _mm512_loadu_si512(wl + (8 * b + j) * 64), v1 = _mm512_loadu_si512(wl + (8 * b + j + 1) * 64);
            for (int t = 0; t < TB; ++t) {
                int32_t a0, a1;
                std::memcpy(&a0, xu + t * Kp + 32 * b + 4 * j, 4);
                std::memcpy(&a1, xu + t * Kp + 32 * b + 4 * j + 4, 4);
                d0[t] = _mm512_dpbusd_epi32(d0[t], _mm512_set1_epi32(a0), v0);
                d1[t] = _mm512_dpbusd_epi32(d1[t], _mm512_set1_epi32(a1), v1);
            }
        }
        const __m512i c = _mm512_loadu_si512(corr + 16 * b);
        for (int t = 0; t < TB; ++t) {
            const __m512 sum = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_add_epi32(d0[t], d1[t]), c));
            acc[t] = _mm512_fmadd_ps(sum, _mm512_set1_ps(sx[t * nb + b]), acc[t]);
        }
    }
    for (int t = 0; t < TB; ++t) _mm512_storeu_ps(sums + 16 * t, acc[t]);
}

using DirectI8 = void (*)(const int8_t*, const int32_t*, int64_t, const uint8_t*, const float*, float*);
template <size_t... T>
constexpr std::array<DirectI8, sizeof...(T)> direct_i8_table(std::index_sequence<T...>) { return {&direct_i8<T + 1>...}; }
const auto DIRECT_I8 = direct_i8_table(std::make_index_sequence<DIRECT_TOKENS>{});

// M <= DIRECT_LIMIT tokens (the caller's plan keeps longer steps on cpu_quant's int8 kernel).
template <typename T>
void linear_i8(const T* x, int64_t M, int64_t K, int64_t Kp, int64_t N, const int8_t* wl, const int32_t* corr,
               const float* scale, const float* bias, T* out) {
    const int64_t nb = Kp / 32, groups = (N + 15) / 16;
    std::vector<int8_t> xq(static_cast<size_t>(M * Kp));
    std::vector<uint8_t> xu(static_cast<size_t>(M * Kp));
    std::vector<float> sx(static_cast<size_t>(M * nb)), xs(static_cast<size_t>(M * nb));
    prepare_tokens(x, M, K, Kp, xq.data(), sx.data(), xs.data());
    for (int64_t i = 0; i < M * Kp; ++i) xu[i] = static_cast<uint8_t>(xq[i] ^ static_cast<int8_t>(0x80));  // + 128
#pragma omp parallel for schedule(static)
    for (int64_t g = 0; g < groups; ++g) {
        alignas(64) float sums[16 * DIRECT_TOKENS];
        const int64_t n0 = 16 * g, valid = std::min<int64_t>(16, N - n0);
        const __mmask16 k = static_cast<__mmask16>(valid >= 16 ? 0xffffu : (1u << valid) - 1u);
        const __m512 sc = _mm512_maskz_loadu_ps(k, scale + n0);
        const __m512 bv = bias ? _mm512_maskz_loadu_ps(k, bias + n0) : _mm512_setzero_ps();
        for (int64_t t0 = 0; t0 < M; t0 += DIRECT_TOKENS) {
            const int64_t tb = std::min(DIRECT_TOKENS, M - t0);
            DIRECT_I8[tb - 1](wl + g * 16 * Kp, corr + g * 16 * nb, Kp, xu.data() + t0 * Kp, sx.data() + t0 * nb, sums);
            for (int64_t t = 0; t < tb; ++t) {
                const __m512 y = _mm512_fmadd_ps(_mm512_loadu_ps(sums + 16 * t), sc, bv);
                if (valid == 16) {
                    store16(out + (t0 + t) * N + n0, y);
                } else {
                    alignas(64) float row[16];
                    _mm512_store_ps(row, y);
                    for (int64_t i = 0; i < valid; ++i) store(out + (t0 + t) * N + n0 + i, row[i]);
                }
            }
        }
    }
}
#endif

void pack(const uint8_t* packed, const uint16_t* d, const uint16_t* m, int64_t N, int64_t Kp, uint8_t* wl, uint16_t* dl,
          uint16_t* ml) {
    const int64_t nb = Kp / 32, groups = (N + 15) / 16;
#pragma omp parallel for schedule(static)
    for (int64_t g = 0; g < groups; ++g) {
#ifdef Q4I8_AVX512
        pack_group(
#else
        pack_group_scalar(
#endif
            packed + 16 * g * (Kp / 2), d + 16 * g * nb, m + 16 * g * nb, Kp, std::min<int64_t>(16, N - 16 * g),
            wl + g * 8 * Kp, dl + g * 16 * nb, ml + g * 16 * nb);
    }
}

}  // namespace

extern "C" {

// 1 where a vector path is compiled in (vpdpbusd with AVX512_VNNI, vpmaddubsw with AVX2), 0 where only the
// scalar path is.
void q4_vnni_available(int64_t* out) {
#if defined(Q4I8_AVX512) || defined(Q4I8_AVX2)
    *out = 1;
#else
    *out = 0;
#endif
}

// q4 layout (N, Kp / 2) bytes, d and m (N, Kp / 32) fp16 -> packed layout: ceil(N / 16) * 8 * Kp bytes, and d, m
// as ceil(N / 16) * Kp / 2 fp16 each (rows past N are zero).
void q4_vnni_pack(const void* packed, const void* d, const void* m, int64_t N, int64_t Kp, void* wl, void* dl,
                  void* ml) {
    pack(static_cast<const uint8_t*>(packed), static_cast<const uint16_t*>(d), static_cast<const uint16_t*>(m), N, Kp,
         static_cast<uint8_t*>(wl), static_cast<uint16_t*>(dl), static_cast<uint16_t*>(ml));
}

#define VNNI_ENTRY(SUFFIX, T)                                                                                    \
    void q4_vnni_linear_##SUFFIX(const void* x, int64_t M, int64_t K, int64_t Kp, int64_t N, const void* wl,     \
                                 const void* dl, const void* ml, const void* bias, void* out) {                  \
        linear(static_cast<const T*>(x), M, K, Kp, N, static_cast<const uint8_t*>(wl),                          \
               static_cast<const uint16_t*>(dl), static_cast<const uint16_t*>(ml), static_cast<const float*>(bias), \
               static_cast<T*>(out));                                                                            \
    }

VNNI_ENTRY(f32, float)
VNNI_ENTRY(bf16, uint16_t)

// The int8-weight form (AVX-512 VNNI builds only): the most tokens a call may have where it is compiled in, else
// 0 and the other i8_vnni functions must not be called.
void i8_vnni_available(int64_t* out) {
#ifdef Q4I8_AVX512
    *out = DIRECT_LIMIT;
#else
    *out = 0;
#endif
}

// int8 weights q (N, Kp) -> the packed layout: ceil(N / 16) * 16 * Kp bytes, and ceil(N / 16) * Kp / 2 int32
// block corrections (rows past N are zero).
void i8_vnni_pack(const void* q, int64_t N, int64_t Kp, void* wl, void* corr) {
#ifdef Q4I8_AVX512
    const int64_t groups = (N + 15) / 16;
#pragma omp parallel for schedule(static)
    for (int64_t g = 0; g < groups; ++g)
        pack_i8_group(static_cast<const int8_t*>(q) + 16 * g * Kp, Kp, std::min<int64_t>(16, N - 16 * g),
                      static_cast<int8_t*>(wl) + g * 16 * Kp, static_cast<int32_t*>(corr) + g * 16 * (Kp / 32));
#else
    (void)q, (void)N, (void)Kp, (void)wl, (void)corr;
#endif
}

#define I8_ENTRY(SUFFIX, T)                                                                                      \
    void i8_vnni_linear_##SUFFIX(const void* x, int64_t M, int64_t K, int64_t Kp, int64_t N, const void* wl,     \
                                 const void* corr, const void* scale, const void* bias, void* out) {             \
        I8_CALL(T)                                                                                               \
    }
#ifdef Q4I8_AVX512
#define I8_CALL(T)                                                                                               \
    linear_i8(static_cast<const T*>(x), M, K, Kp, N, static_cast<const int8_t*>(wl),                             \
              static_cast<const int32_t*>(corr), static_cast<const float*>(scale), static_cast<const float*>(bias), \
              static_cast<T*>(out));
#else
#define I8_CALL(T) (void)x, (void)M, (void)K, (void)Kp, (void)N, (void)wl, (void)corr, (void)scale, (void)bias, (void)out;
#endif
I8_ENTRY(f32, float)
I8_ENTRY(bf16, uint16_t)

}  // extern "C"
