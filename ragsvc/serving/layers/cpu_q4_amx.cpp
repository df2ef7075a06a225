// q4 weights x bf16 activations on AMX tiles, loaded by cpu_q4_amx.py (see there for when and why).
//
// The product is computed transposed, C^T = W . X^T, so the weight needs no layout of its own: an A tile is 16
// weight rows x one 32-block, and de-quantising a row of the q4 layout (cpu_quant.cpp: byte j of a 64-group
// holds weight j in its low nibble and 32 + j in its high one) yields a tile row as it is, 32 bf16 in k order.
// The activations are what gets rearranged, once per call: a B tile holds, for 16 tokens, the k pairs
// (2r, 2r + 1) in row r (TDPBF16PS's pair layout), a 16 x 16 transpose of 32-bit pairs per token tile and
// block. C tiles are 16 weight rows x 16 tokens in fp32, transposed again on the way out.
//
// Each thread de-quantises a panel of 32 weight rows over the whole of K into a cache-resident buffer (w = d * q
// + m in fp32, rounded to bf16, as cpu_quant's q4 GEMM rounds them; one table lookup per 32 weights), then
// multiplies it with every token tile of the pass. Many tokens are taken in passes, each de-quantising the
// weight again, so that a pass's activations stay near the core.
#include "cpu_prelude.h"

#include <omp.h>

#include <algorithm>

#if defined(__AMX_TILE__) && defined(__AMX_BF16__) && defined(__AVX512BF16__)
#define Q4_AMX 1
#endif

namespace {

#ifdef Q4_AMX

constexpr int64_t kRows = 16;  // weight rows per A tile and tokens per B tile
constexpr int64_t kPassBytes = 2048 << 10;  // bf16 activations one pass over the weight multiplies, at most


// 16 x 16 transpose of 32-bit elements held in 16 registers (the standard unpack / shuffle network): r[i]
// ends as column i.
inline void transpose16(__m512i* r) {
    __m512i t[16];
    for (int i = 0; i < 8; ++i) {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; ++i) {
        r[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
        r[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
        r[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
        r[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
    for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 4; ++j) {
            t[8 * i + j] = _mm512_shuffle_i32x4(r[8 * i + j], r[8 * i + j + 4], 0x88);
            t[8 * i + j + 4] = _mm512_shuffle_i32x4(r[8 * i + j], r[8 * i + j + 4], 0xdd);
        }
    for (int j = 0; j < 8; ++j) {
        r[j] = _mm512_shuffle_i32x4(t[j], t[j + 8], 0x88);
        r[j + 8] = _mm512_shuffle_i32x4(t[j], t[j + 8], 0xdd);
    }
}

inline __m512i bf16_row(const float* p) {  // 32 floats -> 32 bf16 (round to nearest even)
    return (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(p + 16), _mm512_loadu_ps(p));
}
inline __m512i bf16_row(const uint16_t* p) { return _mm512_loadu_si512(p); }

// x (M, K) -> xp: token tiles of 16 (zero rows past M), each (Kp / 32) blocks of 16 pair rows x 16 tokens.
template <typename T>
void pack_tokens(const T* x, int64_t M, int64_t K, int64_t Kp, uint32_t* xp) {
    const int64_t tiles = (M + kRows - 1) / kRows, nb = Kp / 32;
#pragma omp parallel for schedule(static) if (M * Kp > (1 << 16))
    for (int64_t job = 0; job < tiles * nb; ++job) {
        const int64_t tt = job / nb, b = job % nb;
        alignas(64) T row[32];
        __m512i r[16];
        for (int64_t t = 0; t < kRows; ++t) {
            const int64_t tok = tt * kRows + t, k0 = 32 * b;
            if (tok >= M || k0 >= K) { r[t] = _mm512_setzero_si512(); continue; }
            if (k0 + 32 <= K) {
                r[t] = bf16_row(x + tok * K + k0);
            } else {
                for (int64_t i = 0; i < 32; ++i) row[i] = k0 + i < K ? x[tok * K + k0 + i] : T(0);
                r[t] = bf16_row(row);
            }
        }
        transpose16(r);  // r[pair row] = that k pair of the 16 tokens
        uint32_t* dst = xp + (tt * nb + b) * 256;
        for (int i = 0; i < 16; ++i) _mm512_store_si512(dst + 16 * i, r[i]);
    }
}

// One weight row's fp16 scales and offsets -> floats, 16 blocks at a time (the table of each block then starts
// from two broadcasts out of L1 rather than two conversions).
inline void row_scales(const uint16_t* d, const uint16_t* m, int64_t nb, float* df, float* mf) {
    for (int64_t b = 0; b < nb; b += 16) {
        const __mmask16 k = static_cast<__mmask16>(nb - b >= 16 ? 0xffffu : (1u << (nb - b)) - 1u);
        _mm512_mask_storeu_ps(df + b, k, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, d + b)));
        _mm512_mask_storeu_ps(mf + b, k, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, m + b)));
    }
}

// Rows [n0, n0 + 32) of the weight -> panel: (Kp / 32) blocks x 2 tiles x 16 rows x 32 bf16 (rows past N zero).
// A block's 16 possible weights, q * d + m for q = 0..15 (in fp32 with two roundings, as quant.dequantise
// computes them, then bf16 to nearest even), are a table in one register: one vpermw looks up its 32 weights.
// `df`, `mf`: room for Kp / 32 floats each.
void dequantise_panel(const uint8_t* packed, const uint16_t* d, const uint16_t* m, int64_t n0, int64_t N,
                      int64_t Kp, uint16_t* panel, float* df, float* mf) {
    const int64_t nb = Kp / 32;
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    const __m512 levels = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (int64_t i = 0; i < 2 * kRows; ++i) {
        const int64_t n = n0 + i;
        uint16_t* dst = panel + (i / kRows) * kRows * 32 + (i % kRows) * 32;  // block 0's row of weight i
        if (n >= N) {
            for (int64_t b = 0; b < nb; ++b) _mm512_store_si512(dst + b * 2 * kRows * 32, _mm512_setzero_si512());
            continue;
        }
        row_scales(d + n * nb, m + n * nb, nb, df, mf);
        const uint8_t* w = packed + n * (Kp / 2);
        for (int64_t g = 0; g < Kp / 64; ++g) {
            const __m256i bytes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 32 * g));
            const __m256i q[2] = {_mm256_and_si256(bytes, low4), _mm256_and_si256(_mm256_srli_epi16(bytes, 4), low4)};
            for (int h = 0; h < 2; ++h) {
                const int64_t b = 2 * g + h;
                const __m512 values = _mm512_add_ps(_mm512_mul_ps(levels, _mm512_set1_ps(df[b])), _mm512_set1_ps(mf[b]));
                const __m512i table = _mm512_castsi256_si512((__m256i)_mm512_cvtneps_pbh(values));
                _mm512_store_si512(dst + b * 2 * kRows * 32,
                                   _mm512_permutexvar_epi16(_mm512_cvtepu8_epi16(q[h]), table));
            }
        }
    }
}

inline void store_row(float* dst, __m512 v, __mmask16 k) { _mm512_mask_storeu_ps(dst, k, v); }
inline void store_row(uint16_t* dst, __m512 v, __mmask16 k) {  // round to nearest even, as store() does
    _mm256_mask_storeu_epi16(dst, k, (__m256i)_mm512_cvtneps_pbh(v));
}

// c: 16 weight rows x 16 tokens -> out[t][n0 + i], plus the bias: transposed in registers, a token's 16
// outputs are one masked store.
template <typename T>
void put_tile(const float* c, const float* bias, int64_t n0, int64_t t0, int64_t N, int64_t M, T* out) {
    const int64_t valid = std::min<int64_t>(kRows, N - n0);
    if (valid <= 0) return;  // the second tile of a panel past the last weight row
    __m512i r[16];
    for (int i = 0; i < 16; ++i) r[i] = _mm512_load_si512(c + 16 * i);
    transpose16(r);  // r[t] = token t's 16 outputs
    const __mmask16 k = static_cast<__mmask16>(valid >= 16 ? 0xffffu : (1u << valid) - 1u);
    const __m512 bv = bias ? _mm512_maskz_loadu_ps(k, bias + n0) : _mm512_setzero_ps();
    for (int64_t t = 0; t < kRows && t0 + t < M; ++t)
        store_row(out + (t0 + t) * N + n0, _mm512_add_ps(_mm512_castsi512_ps(r[t]), bv), k);
}

template <typename T>
void linear_amx(const T* x, int64_t M, int64_t K, int64_t Kp, int64_t N, const uint8_t* packed, const uint16_t* d,
                const uint16_t* m, const float* bias, T* out) {
    const int64_t nb = Kp / 32, tiles = (M + kRows - 1) / kRows, panels = (N + 2 * kRows - 1) / (2 * kRows);
    // Kept between calls (grown, never shrunk): a fresh allocation of a prompt chunk's size is a fresh mapping
    // to fault in on every call. Thread-local to the calling thread: read through the pointer inside the region.
    static thread_local std::vector<uint32_t> xp_buf;
    const size_t need = static_cast<size_t>(tiles * nb * 256 + 16);
    if (xp_buf.size() < need) xp_buf.resize(need);
    uint32_t* const xp = reinterpret_cast<uint32_t*>((reinterpret_cast<uintptr_t>(xp_buf.data()) + 63) & ~uintptr_t(63));
    pack_tokens(x, M, K, Kp, xp);
    // Token tiles per pass over the weight: activations of about an L2's size (2 MB on the Xeons with AMX), at
    // most 256 tokens. In one pass every panel streams all the tokens from L3: a 1024-token call ran at 60% of
    // the rate of a 256-token one. Each pass de-quantises the weight again, about a tenth of a pass of 256
    // tokens but most of one of 32 (K = 8960), so passes are not made smaller than the cache needs.
    const int64_t pass_tiles = std::max<int64_t>(2, std::min<int64_t>(16, kPassBytes / (kRows * Kp * 2)) / 2 * 2);
    for (int64_t first = 0; first < tiles; first += pass_tiles) {
        const int64_t last = std::min(tiles, first + pass_tiles);
#pragma omp parallel
        {
            static thread_local std::vector<uint16_t> panel_buf;
            static thread_local std::vector<float> scale_buf;
            const size_t size = static_cast<size_t>(nb * 2 * kRows * 32 + 32);
            if (panel_buf.size() < size) panel_buf.resize(size);
            if (scale_buf.size() < static_cast<size_t>(2 * nb)) scale_buf.resize(static_cast<size_t>(2 * nb));
            uint16_t* const panel =
                reinterpret_cast<uint16_t*>((reinterpret_cast<uintptr_t>(panel_buf.data()) + 63) & ~uintptr_t(63));
            alignas(64) float c[4][kRows * kRows];
            amx_configure_16x64();  // tmm0-3: C (2 weight x 2 token tiles), tmm4-5: A (weights), tmm6-7: B
#pragma omp for schedule(static)
            for (int64_t p = 0; p < panels; ++p) {
                const int64_t n0 = p * 2 * kRows;
                dequantise_panel(packed, d, m, n0, N, Kp, panel, scale_buf.data(), scale_buf.data() + nb);
                for (int64_t tt = first; tt < last; tt += 2) {
                    const bool two = tt + 1 < last;
                    const uint32_t* b0 = xp + tt * nb * 256;
                    const uint32_t* b1 = b0 + nb * 256;
                    _tile_zero(0);
                    _tile_zero(1);
                    _tile_zero(2);
                    _tile_zero(3);
                    for (int64_t b = 0; b < nb; ++b) {
                        const uint16_t* a = panel + b * 2 * kRows * 32;
                        _tile_loadd(4, a, 64);
                        _tile_loadd(5, a + kRows * 32, 64);
                        _tile_loadd(6, b0 + b * 256, 64);
                        _tile_dpbf16ps(0, 4, 6);
                        _tile_dpbf16ps(1, 5, 6);
                        if (two) {
                            _tile_loadd(7, b1 + b * 256, 64);
                            _tile_dpbf16ps(2, 4, 7);
                            _tile_dpbf16ps(3, 5, 7);
                        }
                    }
                    _tile_stored(0, c[0], 64);
                    _tile_stored(1, c[1], 64);
                    put_tile(c[0], bias, n0, tt * kRows, N, M, out);
                    put_tile(c[1], bias, n0 + kRows, tt * kRows, N, M, out);
                    if (two) {
                        _tile_stored(2, c[2], 64);
                        _tile_stored(3, c[3], 64);
                        put_tile(c[2], bias, n0, (tt + 1) * kRows, N, M, out);
                        put_tile(c[3], bias, n0 + kRows, (tt + 1) * kRows, N, M, out);
                    }
                }
            }
            _tile_release();
        }
    }
}

#endif  // Q4_AMX

}  // namespace

extern "C" {
// 1 where the AMX path is compiled in and the kernel lets this process use tile data (Linux asks each process
// to request it, ARCH_REQ_XCOMP_PERM); 0 otherwise, and the linear functions must not be called.
void q4_amx_available(int64_t* flag) {
#ifdef Q4_AMX
    *flag = amx_permitted() ? 1 : 0;
#else
    *flag = 0;
#endif
}

#define Q4_AMX_LINEAR(SUFFIX, T)                                                                                 \
    void q4_amx_linear_##SUFFIX(const void* x, int64_t M, int64_t K, int64_t Kp, int64_t N, const void* packed, \
                                const void* d, const void* m, const float* bias, void* out) {                   \
        Q4_AMX_CALL(T)                                                                                           \
    }
#ifdef Q4_AMX
#define Q4_AMX_CALL(T)                                                                                           \
    linear_amx(static_cast<const T*>(x), M, K, Kp, N, static_cast<const uint8_t*>(packed),                     \
               static_cast<const uint16_t*>(d), static_cast<const uint16_t*>(m), bias, static_cast<T*>(out));
#else
#define Q4_AMX_CALL(T) (void)x, (void)M, (void)K, (void)Kp, (void)N, (void)packed, (void)d, (void)m, (void)bias, (void)out;
#endif
Q4_AMX_LINEAR(f32, float)
Q4_AMX_LINEAR(bf16, uint16_t)
}  // extern "C"
