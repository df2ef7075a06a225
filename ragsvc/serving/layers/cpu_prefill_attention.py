"""Causal prefill attention for the CPU in bf16, in C++ built with the system compiler and called via ctypes.

Why a kernel: on a CPU with AVX512-BF16 but no AMX, torch's flash SDPA runs a bf16 causal prefill far below
the GEMM throughput oneDNN reaches on the same shapes; in `ragsvc bench serving` at 32 concurrent on an AMD
EPYC, prefill attention was 7.4 s of a 43.5 s run, at 40-55 GFLOP/s against ~300 for the GEMMs. This kernel
packs K and V once into the pair layout of `vdpbf16ps`, computes 4 query rows x 64 keys of scores in
registers, skips the keys the causal mask hides, and never materialises a mask. The C++ is
cpu_prefill_attention.cpp beside this module. `prefill_attention` in
attention.py (SDPA) stays the reference it is tested against and the path for float32, other head sizes and
CPUs without AVX512-BF16.

Numerics: scores are exact products of bf16 pairs summed in fp32, softmax in fp32, P rounded to bf16 for the
P.V products (as torch's flash kernel does in bf16), fp32 accumulation, one rounding of the output.
"""

from __future__ import annotations

import ctypes
import functools

import torch

from ragsvc.serving.layers.cpu_build import load_library

_ARGTYPES = [ctypes.c_void_p, ctypes.c_int64] * 4 + [ctypes.c_int64] * 5 + [ctypes.c_float]


@functools.cache
def load() -> ctypes.CDLL | None:
    """The compiled kernel (built on first use, then cached on disk); None when it cannot be built."""
    lib = load_library("prefill_attention", "cpu_prefill_attention.cpp", {"prefill_attention_bf16": list(_ARGTYPES)})
    if lib is not None:
        lib.prefill_supported.argtypes, lib.prefill_supported.restype = [ctypes.c_int64], ctypes.c_int64
    return lib


def supports(lib: ctypes.CDLL, *, dtype: torch.dtype, num_heads: int, num_kv_heads: int, head_dim: int) -> bool:
    """Whether the kernel handles this shape on this CPU (else use SDPA)."""
    return dtype == torch.bfloat16 and num_heads % num_kv_heads == 0 and bool(lib.prefill_supported(head_dim))


def _token_rows(x: torch.Tensor) -> torch.Tensor:
    """x: (tokens, heads, head_dim) with heads packed (any token stride) -> itself, or a copy if not packed."""
    d = x.shape[2]
    return x if x.stride(2) == 1 and x.stride(1) == d else x.contiguous()


def prefill_attention(
    lib: ctypes.CDLL, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, *, scale: float
) -> None:
    """Causal attention of the chunk's queries, which sit at the last positions of the context, into `out`.

    q: (chunk, heads, head_dim); k, v: (context, kv_heads, head_dim), context >= chunk; out: (chunk, heads,
    head_dim), written in place. All bf16; token strides are free, heads must be packed (copied if not).
    """
    n_q, h, d = q.shape
    n_k, kvh = k.shape[0], k.shape[1]
    if n_k < n_q or v.shape[0] != n_k:
        raise ValueError(f"context of {n_k} keys / {v.shape[0]} values cannot hold a chunk of {n_q} queries")
    if out.stride(2) != 1 or out.stride(1) != d:
        raise ValueError("out must have packed heads: (chunk, heads, head_dim) with unit stride in head_dim")
    q, k, v = _token_rows(q), _token_rows(k), _token_rows(v)
    lib.prefill_attention_bf16(
        q.data_ptr(), q.stride(0), k.data_ptr(), k.stride(0), v.data_ptr(), v.stride(0),
        out.data_ptr(), out.stride(0), n_q, n_k, h, kvh, d, scale,
    )
