// y = x W^T + b for a few float32 tokens against a float32 (out, in) weight, the layout torch keeps: the
// decode GEMM of the float32 path. A decode step reads every weight once and does two flops per weight and
// token, so it is bound by memory; on a Zen 3 torch's GEMM (MKL) read a 576 x 1536 weight at ~5 GB/s for
// 5 tokens, a quarter of what the cores stream. Here each thread takes a range of rows, and each row is read
// once for all tokens: 8-lane FMAs into per-token accumulators, two rows at a time so one load of a token's
// activations serves both.
#include "cpu_prelude.h"

#include <algorithm>
#include <cstdint>
#include <omp.h>

namespace {

constexpr int64_t MAX_TOKENS = 8;
constexpr int TB = 4;
#ifndef PREFETCH
#define PREFETCH 512
#endif  // tokens per pass: 2 rows x 4 tokens = 8 accumulators, within 16 ymm registers

#if defined(__AVX2__) && defined(__FMA__)
inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

// Rows r and r + 1 (r + 1 < N, or `two` false) against tokens t0 .. t0 + nt - 1 (nt <= TB).
template <int NT>
void rows_tokens(const float* x, int64_t K, const float* w0, const float* w1, bool two, float* s0, float* s1) {
    __m256 a0[NT], a1[NT];
    for (int t = 0; t < NT; ++t) a0[t] = a1[t] = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 8 <= K; k += 8) {
        if ((k & 15) == 0) {  // one line of each row, PREFETCH floats ahead
            _mm_prefetch(reinterpret_cast<const char*>(w0 + k + PREFETCH), _MM_HINT_T0);
            _mm_prefetch(reinterpret_cast<const char*>(w1 + k + PREFETCH), _MM_HINT_T0);
        }
        const __m256 v0 = _mm256_loadu_ps(w0 + k);
        const __m256 v1 = two ? _mm256_loadu_ps(w1 + k) : _mm256_setzero_ps();
        for (int t = 0; t < NT; ++t) {
            const __m256 xv = _mm256_loadu_ps(x + t * K + k);
            a0[t] = _mm256_fmadd_ps(v0, xv, a0[t]);
            a1[t] = _mm256_fmadd_ps(v1, xv, a1[t]);
        }
    }
    for (int t = 0; t < NT; ++t) {
        float r0 = hsum(a0[t]), r1 = hsum(a1[t]);
        for (int64_t j = k; j < K; ++j) {  // the tail when K is not a multiple of 8
            r0 += w0[j] * x[t * K + j];
            if (two) r1 += w1[j] * x[t * K + j];
        }
        s0[t] = r0;
        s1[t] = r1;
    }
}
#endif

void rows_scalar(const float* x, int64_t M, int64_t K, const float* w, int64_t n, float* sums) {
    for (int64_t t = 0; t < M; ++t) {
        float s = 0.f;
        for (int64_t k = 0; k < K; ++k) s += w[n * K + k] * x[t * K + k];
        sums[t] = s;
    }
}

}  // namespace

extern "C" {

// 1 where the AVX2 + FMA form is compiled in, 0 where rows take the scalar loop (then torch's GEMM is faster).
void gemm_f32_vectorised(int64_t* out) {
#if defined(__AVX2__) && defined(__FMA__)
    *out = 1;
#else
    *out = 0;
#endif
}

// x (M, K), w (N, K), bias (N) or null, out (M, N); M <= MAX_TOKENS (callers take torch's GEMM above).
void linear_f32(const void* xp, int64_t M, int64_t K, const void* wp, int64_t N, const void* bp, void* op,
                int64_t threads) {
    const float* x = static_cast<const float*>(xp);
    const float* w = static_cast<const float*>(wp);
    const float* bias = static_cast<const float*>(bp);
    float* out = static_cast<float*>(op);
    if (M < 1 || M > MAX_TOKENS) return;
    const int64_t pairs = (N + 1) / 2;
#pragma omp parallel for schedule(static) num_threads(static_cast<int>(std::max<int64_t>(threads, 1)))
    for (int64_t p = 0; p < pairs; ++p) {
        const int64_t n = 2 * p;
        const bool two = n + 1 < N;
        float s0[MAX_TOKENS], s1[MAX_TOKENS];
#if defined(__AVX2__) && defined(__FMA__)
        for (int64_t t0 = 0; t0 < M; t0 += TB) {
            const int64_t nt = std::min<int64_t>(TB, M - t0);
            const float* xt = x + t0 * K;
            const float* w0 = w + n * K;
            const float* w1 = two ? w0 + K : w0;
            switch (nt) {
                case 1: rows_tokens<1>(xt, K, w0, w1, two, s0 + t0, s1 + t0); break;
                case 2: rows_tokens<2>(xt, K, w0, w1, two, s0 + t0, s1 + t0); break;
                case 3: rows_tokens<3>(xt, K, w0, w1, two, s0 + t0, s1 + t0); break;
                default: rows_tokens<4>(xt, K, w0, w1, two, s0 + t0, s1 + t0); break;
            }
        }
#else
        rows_scalar(x, M, K, w, n, s0);
        if (two) rows_scalar(x, M, K, w, n + 1, s1);
#endif
        for (int64_t t = 0; t < M; ++t) {
            out[t * N + n] = s0[t] + (bias ? bias[n] : 0.f);
            if (two) out[t * N + n + 1] = s1[t] + (bias ? bias[n + 1] : 0.f);
        }
    }
}

}  // extern "C"
