"""Paged-attention decode kernel for the CPU, in C++ built with the system compiler and called via ctypes.

Why a kernel: at batch 32 the torch decode path (gather every decode's K/V blocks into a padded copy, then a
masked SDPA) took ~100 of a ~150 ms bf16 decode step of SmolLM2 here, three times the GEMMs. Decode
attention is memory bound; this kernel reads each cached K and V row once, straight from its block, for all
query heads of a GQA group together, and never copies or pads. `decode_attention` in attention.py stays the
reference it is tested against (tests/serving/test_cpu_kernel.py).

Built and loaded by cpu_build.py (g++ via ctypes; None without a compiler, then callers use the torch path).

Numerics: scores, softmax and the weighted sum are computed in float32 from the cache's dtype (float32 or
bfloat16, round-to-nearest-even on the way out), as SDPA does.
"""

from __future__ import annotations

import ctypes
import functools

import torch

from ragsvc.serving.layers.cpu_build import load_library

_SOURCE = r"""
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
// One sequence, all heads: a block's rows for all kv heads are contiguous (block_size * kv_heads * head_dim
// values), so walking them in order streams memory; one kv head at a time would stride through it kv_heads
// times (measured ~1.6x slower).
template <typename T>
void one_seq_avx512(const T* q, const T* kc, const T* vc, const int32_t* table, int64_t len, T* out, int64_t H,
                    int64_t KVH, int64_t D, int64_t block_size, float scale, float* scores, __m512* qv, __m512* acc) {
    const int64_t nv = D / 16, G = H / KVH;
    for (int64_t hq = 0; hq < H; ++hq)
        for (int64_t v = 0; v < nv; ++v)
            qv[hq * nv + v] = _mm512_mul_ps(load16(q + hq * D + 16 * v), _mm512_set1_ps(scale));
    const int64_t token_stride = KVH * D, block_stride = block_size * token_stride;
    const int64_t num_blocks = (len + block_size - 1) / block_size;
    __m512 row[kMaxDim / 16];
    for (int64_t blk = 0; blk < num_blocks; ++blk) {
        const T* base = kc + table[blk] * block_stride;
        const int64_t t0 = blk * block_size, n = len - t0 < block_size ? len - t0 : block_size;
        for (int64_t i = 0; i < n; ++i) {
            for (int64_t h = 0; h < KVH; ++h) {
                const T* kr = base + i * token_stride + h * D;
                for (int64_t v = 0; v < nv; ++v) row[v] = load16(kr + 16 * v);
                for (int64_t hq = h * G; hq < (h + 1) * G; ++hq) {
                    __m512 s = _mm512_mul_ps(qv[hq * nv], row[0]);
                    for (int64_t v = 1; v < nv; ++v) s = _mm512_fmadd_ps(qv[hq * nv + v], row[v], s);
                    scores[hq * len + t0 + i] = _mm512_reduce_add_ps(s);
                }
            }
        }
    }
    float inv[kMaxHeads];
    for (int64_t hq = 0; hq < H; ++hq) {
        float* sg = scores + hq * len;
        float m = sg[0];
        for (int64_t t = 1; t < len; ++t) m = sg[t] > m ? sg[t] : m;
        const __m512 mv = _mm512_set1_ps(m);
        __m512 sum = _mm512_setzero_ps();
        int64_t t = 0;
        for (; t + 16 <= len; t += 16) {
            const __m512 e = exp16_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(sg + t), mv));
            _mm512_storeu_ps(sg + t, e);
            sum = _mm512_add_ps(sum, e);
        }
        float total = _mm512_reduce_add_ps(sum);
        for (; t < len; ++t) { sg[t] = exp_nonpositive(sg[t] - m); total += sg[t]; }
        inv[hq] = 1.f / total;
        for (int64_t v = 0; v < nv; ++v) acc[hq * nv + v] = _mm512_setzero_ps();
    }
    for (int64_t blk = 0; blk < num_blocks; ++blk) {
        const T* base = vc + table[blk] * block_stride;
        const int64_t t0 = blk * block_size, n = len - t0 < block_size ? len - t0 : block_size;
        for (int64_t i = 0; i < n; ++i) {
            for (int64_t h = 0; h < KVH; ++h) {
                const T* vr = base + i * token_stride + h * D;
                for (int64_t v = 0; v < nv; ++v) row[v] = load16(vr + 16 * v);
                for (int64_t hq = h * G; hq < (h + 1) * G; ++hq) {
                    const __m512 p = _mm512_set1_ps(scores[hq * len + t0 + i]);
                    for (int64_t v = 0; v < nv; ++v) acc[hq * nv + v] = _mm512_fmadd_ps(p, row[v], acc[hq * nv + v]);
                }
            }
        }
    }
    alignas(64) float tmp[16];
    for (int64_t hq = 0; hq < H; ++hq) {
        for (int64_t v = 0; v < nv; ++v) {
            _mm512_store_ps(tmp, _mm512_mul_ps(acc[hq * nv + v], _mm512_set1_ps(inv[hq])));
            for (int d = 0; d < 16; ++d) store(out + hq * D + 16 * v + d, tmp[d]);
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
#pragma omp parallel
        {
            std::vector<float> scores(H * max_len);
            std::vector<__m512> qv(H * D / 16), acc(H * D / 16);
#pragma omp for schedule(dynamic, 1)
            for (int64_t b = 0; b < B; ++b)
                one_seq_avx512(q + b * q_stride, kc, vc, tables + b * table_stride, lens[b], out + b * out_stride, H,
                               KVH, D, block_size, scale, scores.data(), qv.data(), acc.data());
        }
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
"""

MAX_HEAD_DIM, MAX_GROUP = 256, 16  # kMaxDim, kMaxGroup in the source
_ARGTYPES = (
    [
        ctypes.c_void_p,
        ctypes.c_int64,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_int64,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_int64,
    ]
    + [ctypes.c_int64] * 5
    + [ctypes.c_float]
)


@functools.cache
def load() -> ctypes.CDLL | None:
    """The compiled kernel (built on first use, then cached on disk); None when it cannot be built."""
    return load_library(
        "paged_decode", _SOURCE, {"paged_decode_f32": list(_ARGTYPES), "paged_decode_bf16": list(_ARGTYPES)}
    )


def supports(*, dtype: torch.dtype, num_heads: int, num_kv_heads: int, head_dim: int) -> bool:
    """Whether the kernel handles this attention shape and cache dtype (else use the torch path)."""
    return (
        dtype in (torch.float32, torch.bfloat16)
        and head_dim <= MAX_HEAD_DIM
        and num_heads % num_kv_heads == 0
        and num_heads // num_kv_heads <= MAX_GROUP
    )


def paged_decode_attention(
    lib: ctypes.CDLL,
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    *,
    scale: float,
) -> torch.Tensor:
    """q: (decodes, heads, head_dim), rows may be strided; caches: (num_blocks, block_size, kv_heads,
    head_dim) contiguous; block_tables: (decodes, max_blocks) int32; context_lens: (decodes,) int32
    -> (decodes, heads, head_dim)."""
    b, h, d = q.shape
    if q.stride(2) != 1 or q.stride(1) != d:
        q = q.contiguous()
    if not (k_cache.is_contiguous() and v_cache.is_contiguous()):
        raise RuntimeError("the paged KV cache must be contiguous")
    tables, lens = block_tables.contiguous(), context_lens.contiguous()
    if tables.dtype != torch.int32 or lens.dtype != torch.int32:
        raise RuntimeError("block tables and context lengths must be int32")
    out = torch.empty((b, h, d), dtype=q.dtype)  # (decodes, heads, head_dim)
    fn = lib.paged_decode_bf16 if q.dtype == torch.bfloat16 else lib.paged_decode_f32
    fn(
        q.data_ptr(),
        q.stride(0),
        k_cache.data_ptr(),
        v_cache.data_ptr(),
        tables.data_ptr(),
        tables.stride(0),
        lens.data_ptr(),
        out.data_ptr(),
        out.stride(0),
        b,
        h,
        k_cache.shape[2],
        d,
        k_cache.shape[1],
        scale,
    )
    return out
