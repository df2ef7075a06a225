"""bf16 GEMM for the few tokens of a decode step, on AVX512-BF16, with the thread count chosen by the caller.

Why: at 1-64 tokens oneDNN's bf16 linear wakes its OpenMP team for every call, and with the engine's passive
wait policy (idle threads sleep at once) that wake is of the order of the whole multiply for the smaller
projections. This kernel runs on as many threads as the per-CPU plan measured best for the shape and token
count (often one: no wake at all), on a weight it lays out once for `vdpbf16ps`.

Numerics: fp32 sums of exact bf16 products over the input features in order, rounded to bf16 once (nearest
even). oneDNN sums in an order of its own, so about one output in ten thousand differs from F.linear in its
last bit; `reference_linear` is the order this kernel follows, and the tests hold it to it exactly.

Layout and blocking are in cpu_gemm_bf16.cpp. Dispatch is `linear.PackedLinear`'s, by the plan in
cpu_gemm_plan.py, unless the engine is configured without `small_gemm`; without AVX512-BF16 or a compiler the
library is None and oneDNN keeps every call.
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ragsvc.serving.layers.cpu_build import load_library

_P, _I = ctypes.c_void_p, ctypes.c_int64
_SIGNATURES: dict[str, list[Any]] = {
    "gemm_bf16_available": [_P],
    "gemm_bf16_pack": [_P, _I, _I, _P],
    "gemm_bf16": [_P, _I, _I, _P, _I, _P, _I],
    "gemm_bf16_fma": [_P, _I, _I, _P, _I, _P, _I],
}


@functools.cache
def load() -> ctypes.CDLL | None:
    """The kernel library when it is built and this CPU has AVX512-BF16, else None."""
    lib = load_library("gemm_bf16", "cpu_gemm_bf16.cpp", _SIGNATURES)
    if lib is None:
        return None
    flag = ctypes.c_int64(0)
    lib.gemm_bf16_available(ctypes.byref(flag))
    return lib if flag.value == 1 else None


@dataclass(frozen=True)
class PackedWeight:
    out_features: int
    in_features: int
    data: torch.Tensor
    """bf16, (ceil(out / 16), ceil(in / 2), 16, 2) flattened: see cpu_gemm_bf16.cpp."""


def packed_numel(out_features: int, in_features: int) -> int:
    """bf16 elements of a weight in the kernel's layout."""
    return -(-out_features // 16) * 16 * (in_features + in_features % 2)


def pack(lib: ctypes.CDLL, weight: torch.Tensor, out: torch.Tensor | None = None) -> PackedWeight:
    """weight: (out, in) bf16 -> the kernel's layout (once per weight, at load), written to `out` (a flat bf16
    tensor of `packed_numel` elements, e.g. a slice of one buffer for a whole model) or to a new tensor."""
    if weight.dtype != torch.bfloat16 or weight.dim() != 2 or weight.device.type != "cpu":
        raise ValueError(f"the bf16 GEMM packs a 2-d bf16 CPU weight, not {weight.dtype} {tuple(weight.shape)}")
    n, k = weight.shape
    data = torch.empty(packed_numel(n, k), dtype=torch.bfloat16) if out is None else out
    if data.dtype != torch.bfloat16 or data.shape != (packed_numel(n, k),) or not data.is_contiguous():
        raise ValueError(f"out must be a contiguous bf16 tensor of {packed_numel(n, k)} elements")
    lib.gemm_bf16_pack(weight.contiguous().data_ptr(), n, k, data.data_ptr())
    return PackedWeight(n, k, data)


def linear(lib: ctypes.CDLL, x: torch.Tensor, pw: PackedWeight, *, threads: int, fma: bool = False) -> torch.Tensor:
    """x: (tokens, in) bf16 -> (tokens, out) bf16 on `threads` threads (1: the calling thread only); `fma`: with
    fp32 FMAs on weights widened in registers instead of `vdpbf16ps` (same sums, see cpu_gemm_bf16.cpp)."""
    if x.dtype != torch.bfloat16 or x.dim() != 2 or x.device.type != "cpu":
        raise ValueError(f"the bf16 GEMM takes a 2-d bf16 CPU input, not {x.dtype} {tuple(x.shape)}")
    m, k = x.shape
    if k != pw.in_features:
        raise ValueError(f"input has {k} features, the weight expects {pw.in_features}")
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    x = F.pad(x, (0, 1)) if k % 2 else x.contiguous()  # the kernel reads features in pairs
    if fma:
        x = x.float()  # (tokens, Kp) widened once here rather than per weight group in the kernel
    out = torch.empty((m, pw.out_features), dtype=torch.bfloat16)  # (tokens, out)
    if m:
        entry = lib.gemm_bf16_fma if fma else lib.gemm_bf16
        entry(x.data_ptr(), m, x.shape[1], pw.data.data_ptr(), pw.out_features, out.data_ptr(), threads)
    return out


def reference_linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The kernel's sums in plain torch: per output, the products of features 2p + 1 then 2p added to an fp32
    sum for p in order, rounded to bf16 once. Slow (a Python loop over feature pairs): the tests' oracle."""
    xf, wf = x.float(), weight.float()
    k = xf.shape[1]
    acc = torch.zeros((x.shape[0], weight.shape[0]), dtype=torch.float32)
    for p in range(0, k, 2):
        if p + 1 < k:
            acc += xf[:, p + 1 : p + 2] * wf[:, p + 1].unsqueeze(0)
        acc += xf[:, p : p + 1] * wf[:, p].unsqueeze(0)
    return acc.to(torch.bfloat16)
