// bf16 x bf16 -> bf16 GEMM for few tokens (decode steps), loaded by cpu_gemm_bf16.py (see there for why).
//
// Weight layout (`pack`): output rows in groups of 16; per group, for each pair of input features p, 16 lanes
// of (w[n][2p], w[n][2p + 1]) -- one 64-byte vector that `vdpbf16ps` multiplies against a broadcast pair of
// one token's features. Rows past N and the feature past an odd K are zero.
//
// Per call: the output groups are cut into tiles of kGroups groups (64 outputs); each tile runs every token
// through it kRows tokens at a time, so a tile's weights (at most a few hundred KB) come from memory once and
// from L2 for the other token blocks. Sums are fp32 over the pairs in order, rounded to bf16 once at the end.
//
// Two ways to multiply a pair, same layout, same sums: `vdpbf16ps` on bf16 inputs, or (the `fma` entry points)
// the pair's two features widened to fp32 in registers (the high half of each 32-bit lane is feature 2p + 1,
// the low half shifted up is feature 2p) and two fp32 FMAs against fp32 inputs. A bf16 product is exact in
// fp32, so both add the product of feature 2p + 1, then of 2p, rounding once per addition. Which is faster is
// the CPU's business: Zen 4 runs `vdpbf16ps` at twice the fp32 FMA rate, a Xeon without AMX at about half.
#include "cpu_prelude.h"

#include <algorithm>
#include <array>
#include <type_traits>
#include <utility>

namespace {

#if defined(__AVX512F__) && defined(__AVX512BF16__) && defined(__AVX512BW__)
constexpr int kGroups = 4;  // 16-output groups per tile: 4 weight vectors per pair
constexpr int kRows = 6;    // tokens per block: 6 x 4 accumulators + 4 weights + 1 broadcast of 32 registers

inline __m512i bcast_pair(const uint16_t* p) {
    int32_t v;
    std::memcpy(&v, p, sizeof v);
    return _mm512_set1_epi32(v);
}

template <int R, int G>
void store_tile(__m512 (&acc)[R][G], uint16_t* out, int64_t ldo, int64_t n0, int64_t N) {
    for (int r = 0; r < R; ++r)
        for (int g = 0; g < G; ++g) {
            const int64_t n = n0 + 16 * g;
            if (n >= N) break;
            if (n + 16 <= N) {
                store16(out + r * ldo + n, acc[r][g]);
            } else {
                alignas(64) uint16_t tmp[16];
                store16(tmp, acc[r][g]);
                std::memcpy(out + r * ldo + n, tmp, sizeof(uint16_t) * static_cast<size_t>(N - n));
            }
        }
}

// out[r][g * 16 + lane] for R tokens x G groups of one tile; x rows hold Kp (even) bf16 features.
template <int R, int G>
void tile(const uint16_t* x, int64_t ldx, const uint16_t* w, int64_t P, uint16_t* out, int64_t ldo, int64_t n0,
          int64_t N) {
    __m512 acc[R][G];
    for (int r = 0; r < R; ++r)
        for (int g = 0; g < G; ++g) acc[r][g] = _mm512_setzero_ps();
    for (int64_t p = 0; p < P; ++p) {
        __m512bh wv[G];
        for (int g = 0; g < G; ++g) wv[g] = (__m512bh)_mm512_loadu_si512(w + (g * P + p) * 32);
        for (int r = 0; r < R; ++r) {
            const __m512bh xv = (__m512bh)bcast_pair(x + r * ldx + 2 * p);
            for (int g = 0; g < G; ++g) acc[r][g] = _mm512_dpbf16_ps(acc[r][g], xv, wv[g]);
        }
    }
    store_tile(acc, out, ldo, n0, N);
}

// The same tile with fp32 FMAs: x rows hold Kp (even) fp32 features. The weights are read twice from L1
// (once per feature of the pair) so that R x G accumulators, G widened weights and a broadcast fit the 32
// registers.
template <int R, int G>
void tile_fma(const float* x, int64_t ldx, const uint16_t* w, int64_t P, uint16_t* out, int64_t ldo, int64_t n0,
              int64_t N) {
    const __m512i high = _mm512_set1_epi32(static_cast<int32_t>(0xFFFF0000u));
    __m512 acc[R][G];
    for (int r = 0; r < R; ++r)
        for (int g = 0; g < G; ++g) acc[r][g] = _mm512_setzero_ps();
    for (int64_t p = 0; p < P; ++p) {
        __m512 wf[G];
        for (int g = 0; g < G; ++g)
            wf[g] = _mm512_castsi512_ps(_mm512_and_si512(_mm512_loadu_si512(w + (g * P + p) * 32), high));
        for (int r = 0; r < R; ++r) {
            const __m512 xv = _mm512_set1_ps(x[r * ldx + 2 * p + 1]);
            for (int g = 0; g < G; ++g) acc[r][g] = _mm512_fmadd_ps(xv, wf[g], acc[r][g]);
        }
        for (int g = 0; g < G; ++g)
            wf[g] = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_loadu_si512(w + (g * P + p) * 32), 16));
        for (int r = 0; r < R; ++r) {
            const __m512 xv = _mm512_set1_ps(x[r * ldx + 2 * p]);
            for (int g = 0; g < G; ++g) acc[r][g] = _mm512_fmadd_ps(xv, wf[g], acc[r][g]);
        }
    }
    store_tile(acc, out, ldo, n0, N);
}

template <typename X>
using Tile = void (*)(const X*, int64_t, const uint16_t*, int64_t, uint16_t*, int64_t, int64_t, int64_t);
template <typename X, int R, size_t... G>
constexpr std::array<Tile<X>, sizeof...(G)> tile_row(std::index_sequence<G...>) {
    if constexpr (std::is_same_v<X, float>) return {&tile_fma<R, G + 1>...};
    else return {&tile<R, G + 1>...};
}
template <typename X, size_t... R>
constexpr std::array<std::array<Tile<X>, kGroups>, kRows> tile_table(std::index_sequence<R...>) {
    return {tile_row<X, R + 1>(std::make_index_sequence<kGroups>{})...};
}
// [rows - 1][groups - 1]
const auto TILES = tile_table<uint16_t>(std::make_index_sequence<kRows>{});
const auto TILES_FMA = tile_table<float>(std::make_index_sequence<kRows>{});

template <typename X>
void gemm(const X* x, int64_t M, int64_t Kp, const uint16_t* w, int64_t N, uint16_t* out, int64_t threads,
          const std::array<std::array<Tile<X>, kGroups>, kRows>& tiles_of) {
    const int64_t P = Kp / 2, groups = (N + 15) / 16, tiles = (groups + kGroups - 1) / kGroups;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
    for (int64_t t = 0; t < tiles; ++t) {
        const int64_t g0 = t * kGroups, g = std::min<int64_t>(kGroups, groups - g0);
        const uint16_t* wt = w + g0 * P * 32;
        for (int64_t m0 = 0; m0 < M; m0 += kRows) {
            const int64_t r = std::min<int64_t>(kRows, M - m0);
            tiles_of[r - 1][g - 1](x + m0 * Kp, Kp, wt, P, out + m0 * N, N, 16 * g0, N);
        }
    }
}
#endif

}  // namespace

extern "C" {
// *flag = 1 when this build has the kernel (the CPU has AVX512-BF16), else 0.
void gemm_bf16_available(int64_t* flag) {
#if defined(__AVX512F__) && defined(__AVX512BF16__) && defined(__AVX512BW__)
    *flag = 1;
#else
    *flag = 0;
#endif
}

// w: (N, K) bf16 rows -> wp: groups of 16 rows, (ceil(N / 16), Kp / 2, 16, 2), Kp = K rounded up to even.
void gemm_bf16_pack(const uint16_t* w, int64_t N, int64_t K, uint16_t* wp) {
    const int64_t Kp = K + (K & 1), P = Kp / 2, groups = (N + 15) / 16;
    for (int64_t g = 0; g < groups; ++g)
        for (int64_t p = 0; p < P; ++p)
            for (int64_t lane = 0; lane < 16; ++lane) {
                const int64_t n = 16 * g + lane;
                uint16_t* dst = wp + ((g * P + p) * 16 + lane) * 2;
                dst[0] = n < N ? w[n * K + 2 * p] : 0;
                dst[1] = n < N && 2 * p + 1 < K ? w[n * K + 2 * p + 1] : 0;
            }
}

// out (M, N) = x (M, Kp) . wp^T, x rows of Kp (even) bf16 features (zero past K), on `threads` threads.
void gemm_bf16(const uint16_t* x, int64_t M, int64_t Kp, const uint16_t* wp, int64_t N, uint16_t* out,
               int64_t threads) {
#if defined(__AVX512F__) && defined(__AVX512BF16__) && defined(__AVX512BW__)
    gemm(x, M, Kp, wp, N, out, threads, TILES);
#else
    (void)x; (void)M; (void)Kp; (void)wp; (void)N; (void)out; (void)threads;
#endif
}

// The same product with fp32 FMAs: x rows of Kp (even) fp32 features (bf16 values widened, zero past K).
void gemm_bf16_fma(const float* x, int64_t M, int64_t Kp, const uint16_t* wp, int64_t N, uint16_t* out,
                   int64_t threads) {
#if defined(__AVX512F__) && defined(__AVX512BF16__) && defined(__AVX512BW__)
    gemm(x, M, Kp, wp, N, out, threads, TILES_FMA);
#else
    (void)x; (void)M; (void)Kp; (void)wp; (void)N; (void)out; (void)threads;
#endif
}
}
