"""Paged-attention decode kernel for the CPU, in C++ built with the system compiler and called via ctypes.

Why a kernel: the torch decode path (gather every decode's K/V blocks into a padded copy, then a masked SDPA)
pays for a copy and for padding on every step; in a bf16 SmolLM2 decode step at batch 32 (`ragsvc bench
serving`) it took about two thirds of the step, three times the GEMMs. Decode attention is memory bound;
this kernel reads each cached K and V row once, straight from its block, for all query heads of a GQA group
together, and never copies or pads. `decode_attention` in attention.py stays the reference it is tested
against (tests/serving/test_cpu_kernel.py).

The C++ is cpu_paged_attention.cpp beside this module, built and loaded by cpu_build.py (g++ via ctypes;
None without a compiler, then callers use the torch path).

Numerics: scores and softmax are computed in float32 from the cache's dtype (float32 or bfloat16,
round-to-nearest-even on the way out), as SDPA does. With a bf16 cache on a CPU with AVX512-BF16 the
probabilities are rounded to bf16 for the weighted sum of V (fp32 accumulators), as torch's bf16 flash SDPA
does; the weighted sum then takes half the instructions (values_kv_head_bf16).
"""

from __future__ import annotations

import ctypes
import functools

import torch

from ragsvc.serving.layers.cpu_build import load_library

MAX_HEAD_DIM, MAX_GROUP = 256, 16  # kMaxDim, kMaxGroup in cpu_paged_attention.cpp
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
    signatures = {"paged_decode_f32": list(_ARGTYPES), "paged_decode_bf16": list(_ARGTYPES)}
    return load_library("paged_decode", "cpu_paged_attention.cpp", signatures)


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
