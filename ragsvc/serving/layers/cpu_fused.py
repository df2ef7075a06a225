"""Fused element-wise CPU kernels: RMSNorm (with the residual add), SiLU-and-multiply, rotary embedding.

Why: in torch each of these is a chain of small passes over the activations (RMSNorm alone: add, to-float,
pow, mean, add eps, rsqrt, mul, to-bf16, mul by weight); in `ragsvc bench serving` they were ~17% of the wall
time, as much as half the GEMM time in a prefill step. Each kernel reads its inputs once and writes its
outputs once. The C++ is cpu_fused.cpp beside this module; it also holds the greedy sampler's row argmax.

Numerics follow the torch code they replace (norm.py, llama.py's MLP, rotary.py), rounding to the model's
dtype at the same points: float32 math inside, and for bfloat16 a round-to-nearest-even wherever torch
produces a bf16 tensor (residual sum, normalised value, weight product; silu, its product; each rotary
product and their sum). Sums run in a different order than torch's, so results may differ in the last bit;
the torch code stays the reference (tests/serving/test_cpu_fused.py) and the path without a compiler.
"""

from __future__ import annotations

import ctypes
import functools

import torch

from ragsvc.serving.layers.cpu_build import load_library

_P, _I, _F = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
_SIGNATURES = {
    **{f"rms_norm_{s}": [_P, _I, _P, _P, _P, _P, _I, _I, _F] for s in ("f32", "bf16")},
    **{f"silu_mul_{s}": [_P, _P, _I, _I] for s in ("f32", "bf16")},
    **{f"rotary_{s}": [_P, _I, _P, _P, _P, _I, _I, _I] for s in ("f32", "bf16")},
    **{f"argmax_{s}": [_P, _I, _I, _P] for s in ("f32", "bf16")},
}
_SUFFIX = {torch.float32: "f32", torch.bfloat16: "bf16"}


@functools.cache
def load() -> ctypes.CDLL | None:
    """The compiled kernels (built on first use, then cached on disk); None when they cannot be built."""
    return load_library("fused", "cpu_fused.cpp", _SIGNATURES)


def supports(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype in _SUFFIX


def _rows(x: torch.Tensor) -> torch.Tensor:
    """x with unit stride along its last dimension and evenly strided rows (a view when it already is)."""
    return x if x.stride(-1) == 1 else x.contiguous()


def rms_norm(
    lib: ctypes.CDLL, x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """x: (tokens, hidden) -> (normed, x + residual); the second is None without a residual."""
    x = _rows(x)
    rows, cols = x.shape
    out = torch.empty((rows, cols), dtype=x.dtype)  # (tokens, hidden)
    res_out = None
    res_ptr = res_out_ptr = None
    if residual is not None:
        residual = residual.contiguous()
        res_out = torch.empty((rows, cols), dtype=x.dtype)  # (tokens, hidden)
        res_ptr, res_out_ptr = residual.data_ptr(), res_out.data_ptr()
    fn = getattr(lib, f"rms_norm_{_SUFFIX[x.dtype]}")
    fn(x.data_ptr(), x.stride(0), res_ptr, res_out_ptr, out.data_ptr(), weight.contiguous().data_ptr(), rows, cols, eps)
    return out, res_out


def silu_mul(lib: ctypes.CDLL, gate_up: torch.Tensor) -> torch.Tensor:
    """gate_up: (tokens, 2 * inter), gate then up -> silu(gate) * up, (tokens, inter)."""
    gate_up = gate_up.contiguous()
    rows, inter = gate_up.shape[0], gate_up.shape[1] // 2
    out = torch.empty((rows, inter), dtype=gate_up.dtype)  # (tokens, inter)
    getattr(lib, f"silu_mul_{_SUFFIX[gate_up.dtype]}")(gate_up.data_ptr(), out.data_ptr(), rows, inter)
    return out


def rotary(lib: ctypes.CDLL, x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """x: (tokens, heads, head_dim), rows may be strided; cos, signed_sin: (tokens, 1, head_dim) in x's dtype
    -> rotated x, (tokens, heads, head_dim) contiguous."""
    if x.stride(2) != 1 or x.stride(1) != x.shape[2]:
        x = x.contiguous()
    tokens, heads, dim = x.shape
    cos, signed_sin = cos.contiguous(), signed_sin.contiguous()
    out = torch.empty((tokens, heads, dim), dtype=x.dtype)  # (tokens, heads, head_dim)
    fn = getattr(lib, f"rotary_{_SUFFIX[x.dtype]}")
    fn(x.data_ptr(), x.stride(0), cos.data_ptr(), signed_sin.data_ptr(), out.data_ptr(), tokens, heads, dim)
    return out


def argmax(lib: ctypes.CDLL, logits: torch.Tensor) -> torch.Tensor | None:
    """logits: (rows, vocab) -> (rows,) index of each row's first maximum; None when a row holds a NaN.

    Greedy decoding on the model's own dtype: bf16 -> fp32 is exact, so the argmax is the same as after a
    float32 copy, without making one: a single pass over the logits instead of a copy and then torch's max."""
    logits = logits.contiguous()
    rows, cols = logits.shape
    out = torch.empty(rows, dtype=torch.long)  # (rows,)
    getattr(lib, f"argmax_{_SUFFIX[logits.dtype]}")(logits.data_ptr(), rows, cols, out.data_ptr())
    return None if bool((out < 0).any()) else out
