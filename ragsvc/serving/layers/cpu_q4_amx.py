"""q4 weights x bf16 activations on AMX tiles: the many-token kernel for q4 models on CPUs with AMX.

Why: with 32 sequences decoding, or a prompt chunk, a q4 linear is bound by arithmetic, not by the bytes of its
weight. On a Xeon with AMX the int8-activation kernel (cpu_q4_vnni: 64 byte products per vpdpbusd, after
unpacking every nibble again for every few tokens) took 574 ms per Qwen2.5-1.5B decode step at 32 sequences,
462 of them in the linears. One TDPBF16PS multiplies a 16 x 32 tile of weights by 32 x 16 activations (8,192
products), so de-quantising each weight once per call, not the products, is most of this kernel's cost at 32
tokens; with it the step took 319 ms. Against the int8-activation kernel at 32-2,048 tokens it ran 1.05-1.5x on
that model's K = 1536 linears, and 0.8-1.3x on its down projection (K = 8960; even or behind up to 256 tokens,
ahead beyond). The activations stay in bf16 (no int8 rounding).

Layout: none of its own. The kernel reads the q4 layout (quant.py) and computes the product transposed,
C^T = W . X^T: a row of the weight de-quantised is a row of an A tile as it is, and the activations, being
fewer than the weights, are the operand rearranged into TDPBF16PS's pair layout (cpu_q4_amx.cpp).

Numerics: w = d * q + m in fp32 rounded to bf16 (as cpu_quant's q4 GEMM and a bf16 model's own weights), x
rounded to bf16, fp32 sums. `reference_linear` is the plain-torch form it is tested against.

Where: `QuantLinear` takes it for q4 steps of at least `QuantPlan.amx_tokens` tokens, a threshold measured on
the CPU at hand against the path the plan would take otherwise (cpu_tuning). It is 0 (never) where the library
has no AMX path: a CPU without AMX_BF16, a compiler without it, or a kernel that does not let the process use
tile data.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any

import torch

from ragsvc.serving.layers.cpu_build import load_library
from ragsvc.serving.layers.quant import QuantWeight, dequantise

_P, _I = ctypes.c_void_p, ctypes.c_int64
_SIGNATURES: dict[str, list[Any]] = {
    "q4_amx_available": [_P],
    **{f"q4_amx_linear_{s}": [_P, _I, _I, _I, _I, _P, _P, _P, _P, _P] for s in ("f32", "bf16")},
}
_SUFFIX = {torch.float32: "f32", torch.bfloat16: "bf16"}


@functools.cache
def load() -> ctypes.CDLL | None:
    """The compiled kernel, when it has its AMX path and this process may use tile data; else None."""
    lib = load_library("q4_amx", "cpu_q4_amx.cpp", _SIGNATURES)
    if lib is None:
        return None
    flag = ctypes.c_int64(0)
    lib.q4_amx_available(ctypes.byref(flag))
    return lib if flag.value == 1 else None


def linear(lib: ctypes.CDLL, x: torch.Tensor, qw: QuantWeight, bias: torch.Tensor | None) -> torch.Tensor:
    """x: (tokens, in) fp32 or bf16 -> (tokens, out) in x's dtype; `qw` q4; `bias` fp32 (out,) or None."""
    if qw.fmt != "q4" or qw.offset is None:
        raise ValueError(f"the AMX kernel multiplies q4 weights, not {qw.fmt}")
    if x.dtype not in _SUFFIX or x.device.type != "cpu":
        raise ValueError(f"the AMX kernel takes fp32 or bf16 CPU tensors, not {x.dtype} on {x.device}")
    x = x.contiguous()
    m, k = x.shape
    if k != qw.in_features:
        raise ValueError(f"input has {k} features, the weight expects {qw.in_features}")
    if bias is not None and (bias.dtype != torch.float32 or bias.numel() != qw.out_features):
        raise ValueError(f"bias must be fp32 with {qw.out_features} values")
    out = torch.empty((m, qw.out_features), dtype=x.dtype)  # (tokens, out)
    if m == 0:
        return out
    getattr(lib, f"q4_amx_linear_{_SUFFIX[x.dtype]}")(
        x.data_ptr(), m, k, qw.padded_in, qw.out_features, qw.data.data_ptr(), qw.scale.data_ptr(),
        qw.offset.data_ptr(), None if bias is None else bias.contiguous().data_ptr(), out.data_ptr())
    return out


def reference_linear(x: torch.Tensor, qw: QuantWeight, bias: torch.Tensor | None) -> torch.Tensor:
    """The kernel in plain torch: bf16 activations times the de-quantised weight rounded to bf16, fp32 sums,
    out in x's dtype (the oracle of the kernel's tests)."""
    w = dequantise(qw).to(torch.bfloat16).float()  # (out, in)
    y = x.to(torch.bfloat16).float() @ w.T  # (tokens, out)
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype)
