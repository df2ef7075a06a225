// Fused element-wise CPU kernels (RMSNorm with the residual add, SiLU-and-multiply, rotary embedding) and the
// greedy sampler's row argmax, loaded by cpu_fused.py (see there for why and for the numerics).
#include "cpu_prelude.h"

namespace {

// Elements below which waking a second OpenMP thread (futex, with OMP_WAIT_POLICY=PASSIVE) costs more than it
// saves: silu at batch 32 (49k elements) ran slower on two threads than on one.
constexpr int64_t kParallelMin = 1 << 18;

template <typename T> inline float round_to(float x) { T t; store(&t, x); return load(t); }

#ifdef __AVX512F__
// AVX-512 versions for widths that are multiples of 16 (the scalar loops below did not vectorise well:
// silu was ~9x slower than torch). Same rounding points as the scalar code.
template <typename T>
void rms_norm_avx512(const T* x, int64_t x_stride, const T* res, T* res_out, T* out, const T* w, int64_t rows,
                     int64_t cols, float eps) {
#pragma omp parallel for if (rows * cols > kParallelMin)
    for (int64_t r = 0; r < rows; ++r) {
        const T* xr = x + r * x_stride;
        T* o = out + r * cols;
        __m512 ss = _mm512_setzero_ps();
        if (res != nullptr) {
            T* ro = res_out + r * cols;
            const T* rr = res + r * cols;
            for (int64_t c = 0; c < cols; c += 16) {
                const __m512 v = round16(_mm512_add_ps(load16(xr + c), load16(rr + c)), xr);
                store16(ro + c, v);
                ss = _mm512_fmadd_ps(v, v, ss);
            }
            xr = ro;
        } else {
            for (int64_t c = 0; c < cols; c += 16) ss = _mm512_fmadd_ps(load16(xr + c), load16(xr + c), ss);
        }
        const __m512 inv = _mm512_set1_ps(1.f / std::sqrt(_mm512_reduce_add_ps(ss) / static_cast<float>(cols) + eps));
        for (int64_t c = 0; c < cols; c += 16)
            store16(o + c, _mm512_mul_ps(load16(w + c), round16(_mm512_mul_ps(load16(xr + c), inv), xr)));
    }
}

template <typename T>
void silu_mul_avx512(const T* gate_up, T* out, int64_t rows, int64_t inter) {
#pragma omp parallel for if (rows * inter > kParallelMin)
    for (int64_t r = 0; r < rows; ++r) {
        const T* g = gate_up + r * 2 * inter;
        const T* u = g + inter;
        T* o = out + r * inter;
        for (int64_t c = 0; c < inter; c += 16) {
            const __m512 gv = load16(g + c);
            const __m512 e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), gv));  // exp(-g)
            // g / (1 + e) as g * rcp(1 + e): vdivps took ~16 cycles per 16 lanes, the kernel's bulk; the 14-bit
            // reciprocal plus one Newton step is accurate to ~1 ulp of fp32.
            const __m512 d = _mm512_add_ps(_mm512_set1_ps(1.f), e);
            __m512 r = _mm512_rcp14_ps(d);
            r = _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(2.f)));
            const __m512 s = round16(_mm512_mul_ps(gv, r), g);
            store16(o + c, _mm512_mul_ps(s, load16(u + c)));
        }
    }
}

template <typename T>
void rotary_avx512(const T* x, int64_t x_stride, const T* cos, const T* sin, T* out, int64_t tokens, int64_t heads,
                   int64_t dim) {
    const int64_t half = dim / 2;
#pragma omp parallel for if (tokens * heads * dim > kParallelMin)
    for (int64_t t = 0; t < tokens; ++t) {
        for (int64_t h = 0; h < heads; ++h) {
            const T* xr = x + t * x_stride + h * dim;
            T* o = out + (t * heads + h) * dim;
            for (int64_t d = 0; d < dim; d += 16) {
                const __m512 rolled = load16(xr + (d < half ? d + half : d - half));
                const __m512 a = round16(_mm512_mul_ps(load16(xr + d), load16(cos + t * dim + d)), xr);
                const __m512 b = round16(_mm512_mul_ps(rolled, load16(sin + t * dim + d)), xr);
                store16(o + d, _mm512_add_ps(a, b));
            }
        }
    }
}
#endif

template <typename T>
void rms_norm(const T* x, int64_t x_stride, const T* res, T* res_out, T* out, const T* w, int64_t rows,
              int64_t cols, float eps) {
#ifdef __AVX512F__
    if (cols % 16 == 0) {
        rms_norm_avx512(x, x_stride, res, res_out, out, w, rows, cols, eps);
        return;
    }
#endif
#pragma omp parallel for if (rows * cols > kParallelMin)
    for (int64_t r = 0; r < rows; ++r) {
        const T* xr = x + r * x_stride;
        T* o = out + r * cols;
        float ss = 0.f;
        if (res != nullptr) {  // residual = x + residual, rounded like torch's add, then normalised
            T* ro = res_out + r * cols;
            const T* rr = res + r * cols;
#pragma omp simd reduction(+ : ss)
            for (int64_t c = 0; c < cols; ++c) {
                const float v = round_to<T>(load(xr[c]) + load(rr[c]));
                store(ro + c, v);
                ss += v * v;
            }
            xr = ro;
        } else {
#pragma omp simd reduction(+ : ss)
            for (int64_t c = 0; c < cols; ++c) ss += load(xr[c]) * load(xr[c]);
        }
        const float inv = 1.f / std::sqrt(ss / static_cast<float>(cols) + eps);
#pragma omp simd
        for (int64_t c = 0; c < cols; ++c) store(o + c, load(w[c]) * round_to<T>(load(xr[c]) * inv));
    }
}

#if defined(__AVX2__) && defined(__FMA__) && !defined(__AVX512F__)
// AVX2: the scalar loop below runs a branch, two exps' worth of work and a division per element; this is the
// AVX-512 form on 8 lanes, with a true division (ymm vdivps is cheap enough on these cores).
template <typename T>
void silu_mul_avx2(const T* gate_up, T* out, int64_t rows, int64_t inter) {
#pragma omp parallel for if (rows * inter > kParallelMin)
    for (int64_t r = 0; r < rows; ++r) {
        const T* g = gate_up + r * 2 * inter;
        const T* u = g + inter;
        T* o = out + r * inter;
        for (int64_t c = 0; c < inter; c += 8) {
            const __m256 gv = load8(g + c);
            const __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), gv));  // exp(-g)
            const __m256 s = round8(_mm256_div_ps(gv, _mm256_add_ps(_mm256_set1_ps(1.f), e)), g);
            store8(o + c, _mm256_mul_ps(s, load8(u + c)));
        }
    }
}
#endif

inline float silu(float g) {
    const float e = g > 0.f ? exp_nonpositive(-g) : 1.f / exp_nonpositive(g);  // exp(-g) without overflow
    return g / (1.f + e);
}

template <typename T>
void silu_mul(const T* gate_up, T* out, int64_t rows, int64_t inter) {
#ifdef __AVX512F__
    if (inter % 16 == 0) {
        silu_mul_avx512(gate_up, out, rows, inter);
        return;
    }
#elif defined(__AVX2__) && defined(__FMA__)
    if (inter % 8 == 0) {
        silu_mul_avx2(gate_up, out, rows, inter);
        return;
    }
#endif
#pragma omp parallel for if (rows * inter > kParallelMin)
    for (int64_t r = 0; r < rows; ++r) {
        const T* g = gate_up + r * 2 * inter;
        const T* u = g + inter;
        T* o = out + r * inter;
#pragma omp simd
        for (int64_t c = 0; c < inter; ++c) store(o + c, round_to<T>(silu(load(g[c]))) * load(u[c]));
    }
}

// x: (tokens, heads, dim) with row stride x_stride; cos, sin: (tokens, dim), sin's first half negated.
template <typename T>
void rotary(const T* x, int64_t x_stride, const T* cos, const T* sin, T* out, int64_t tokens, int64_t heads,
            int64_t dim) {
    const int64_t half = dim / 2;
#ifdef __AVX512F__
    if (half % 16 == 0) {
        rotary_avx512(x, x_stride, cos, sin, out, tokens, heads, dim);
        return;
    }
#endif
#pragma omp parallel for if (tokens * heads * dim > kParallelMin)
    for (int64_t t = 0; t < tokens; ++t) {
        const T* c = cos + t * dim;
        const T* s = sin + t * dim;
        for (int64_t h = 0; h < heads; ++h) {
            const T* xr = x + t * x_stride + h * dim;
            T* o = out + (t * heads + h) * dim;
#pragma omp simd
            for (int64_t d = 0; d < dim; ++d) {
                const float rolled = load(xr[d < half ? d + half : d - half]);
                store(o + d, round_to<T>(load(xr[d]) * load(c[d])) + round_to<T>(rolled * load(s[d])));
            }
        }
    }
}

// Index of each row's largest value, the first one on ties (torch's max(dim).indices rule); -1 for a row
// holding a NaN (the caller then asks torch, which propagates NaNs its own way).
template <typename T>
int64_t argmax_row(const T* x, int64_t n) {
    int64_t i = 0, best_i = -1;
    float best = -INFINITY;
#ifdef __AVX512F__
    if (n >= 16) {
        __m512 vbest = _mm512_set1_ps(-INFINITY);
        __m512i vidx = _mm512_set1_epi32(-1);
        __m512i idx = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        __mmask16 nan = 0;
        for (; i + 16 <= n; i += 16) {
            const __m512 v = load16(x + i);
            nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
            const __mmask16 gt = _mm512_cmp_ps_mask(v, vbest, _CMP_GT_OQ);  // strictly greater: keeps the first
            vbest = _mm512_mask_mov_ps(vbest, gt, v);
            vidx = _mm512_mask_mov_epi32(vidx, gt, idx);
            idx = _mm512_add_epi32(idx, _mm512_set1_epi32(16));
        }
        if (nan) return -1;
        best = _mm512_reduce_max_ps(vbest);
        const __mmask16 at = _mm512_cmp_ps_mask(vbest, _mm512_set1_ps(best), _CMP_EQ_OQ);
        best_i = _mm512_mask_reduce_min_epi32(at, vidx);  // lanes tie on the max: the smallest index is first
    }
#endif
    for (; i < n; ++i) {
        const float v = load(x[i]);
        if (v != v) return -1;
        if (best_i < 0 || v > best) best = v, best_i = i;
    }
    return best_i;
}

template <typename T>
void argmax_rows(const T* x, int64_t rows, int64_t cols, int64_t* out) {
#pragma omp parallel for if (rows * cols > kParallelMin)
    for (int64_t r = 0; r < rows; ++r) out[r] = argmax_row(x + r * cols, cols);
}

}  // namespace

extern "C" {
void rms_norm_f32(const float* x, int64_t xs, const float* res, float* ro, float* out, const float* w, int64_t rows,
                  int64_t cols, float eps) { rms_norm(x, xs, res, ro, out, w, rows, cols, eps); }
void rms_norm_bf16(const uint16_t* x, int64_t xs, const uint16_t* res, uint16_t* ro, uint16_t* out, const uint16_t* w,
                   int64_t rows, int64_t cols, float eps) { rms_norm(x, xs, res, ro, out, w, rows, cols, eps); }
void silu_mul_f32(const float* gu, float* out, int64_t rows, int64_t inter) { silu_mul(gu, out, rows, inter); }
void silu_mul_bf16(const uint16_t* gu, uint16_t* out, int64_t rows, int64_t inter) { silu_mul(gu, out, rows, inter); }
void rotary_f32(const float* x, int64_t xs, const float* c, const float* s, float* out, int64_t t, int64_t h,
                int64_t d) { rotary(x, xs, c, s, out, t, h, d); }
void argmax_f32(const float* x, int64_t rows, int64_t cols, int64_t* out) { argmax_rows(x, rows, cols, out); }
void argmax_bf16(const uint16_t* x, int64_t rows, int64_t cols, int64_t* out) { argmax_rows(x, rows, cols, out); }
void rotary_bf16(const uint16_t* x, int64_t xs, const uint16_t* c, const uint16_t* s, uint16_t* out, int64_t t,
                 int64_t h, int64_t d) { rotary(x, xs, c, s, out, t, h, d); }
}
