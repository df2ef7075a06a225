"""The float32 decode GEMM: a few tokens against a plain (out, in) float32 weight, for CPUs whose engine runs
in float32 (no bf16 instructions: `dtype` "auto" resolves to float32 there).

A decode step is bound by reading the weights; torch's GEMM (MKL) read them at ~5 GB/s for 1-8 tokens on a
Zen 3 whose two cores stream ~19 GB/s, so a float32 SmolLM2 step of 5 tokens took ~125 ms. cpu_gemm_f32.cpp
reads each row once for all tokens, from the weight torch already holds (no copy, no packing).

Whether it wins is measured per CPU and weight shape (`f32_plan`, cached like the other plans): for each shape
of the model and each of TOKENS, torch's GEMM against the kernel on copies of the weight that together outgrow
the last-level cache, as a decode step streams them. A call takes the kernel for token counts up to the
largest measured count where the kernel was faster, torch's GEMM otherwise and for every prompt chunk.

Its sums run in another order than MKL's, so results differ in the last bits: an explicit `dtype="float32"`,
the exactness path against HF, never takes it (`LlamaForCausalLM.use_cpu_kernels`).
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from ragsvc import native
from ragsvc.serving.layers.cpu_build import load_library
from ragsvc.serving.layers.cpu_gemm_plan import per_call_us, shape_key
from ragsvc.serving.layers.cpu_tuning import cpu_info
from ragsvc.serving.layers.plan_cache import cached_plan

_P, _I = ctypes.c_void_p, ctypes.c_int64
_SIGNATURES: dict[str, list[Any]] = {"linear_f32": [_P, _I, _I, _P, _I, _P, _P, _I], "gemm_f32_vectorised": [_P]}
MAX_TOKENS = 8
"""The kernel's most tokens per call (its accumulators); more go to torch's GEMM."""
TOKENS = (1, 2, 4, 8)
"""Token counts the plan measures."""
PLAN_VERSION = 1


@functools.cache
def load() -> ctypes.CDLL | None:
    """The compiled kernel when it has its vector form here (AVX2 and FMA); None otherwise (then torch's GEMM,
    which a scalar loop would not beat)."""
    lib = load_library("gemm_f32", "cpu_gemm_f32.cpp", _SIGNATURES)
    if lib is None:
        return None
    flag = ctypes.c_int64(0)
    lib.gemm_f32_vectorised(ctypes.byref(flag))
    return lib if flag.value else None


def linear(lib: ctypes.CDLL, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, *,
           threads: int) -> torch.Tensor:
    """x: (tokens, in) float32, 1 to MAX_TOKENS tokens; weight: (out, in) float32 -> (tokens, out)."""
    if x.dtype != torch.float32 or weight.dtype != torch.float32 or x.dim() != 2 or weight.dim() != 2:
        raise ValueError(f"the f32 GEMM takes 2-d float32 tensors, not {x.dtype} {tuple(x.shape)} and "
                         f"{weight.dtype} {tuple(weight.shape)}")
    m, k = x.shape
    if not 1 <= m <= MAX_TOKENS or weight.shape[1] != k:
        raise ValueError(f"{m} tokens of {k} features against a weight of {weight.shape[1]}: needs 1 to "
                         f"{MAX_TOKENS} tokens and matching features")
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    x = x.contiguous()
    weight = weight.contiguous()
    out = torch.empty((m, weight.shape[0]), dtype=torch.float32)  # (tokens, out)
    lib.linear_f32(x.data_ptr(), m, k, weight.data_ptr(), weight.shape[0],
                   None if bias is None else bias.contiguous().data_ptr(), out.data_ptr(), threads)
    return out


@dataclass(frozen=True, slots=True)
class F32Plan:
    """Per weight shape ("in x out"): the most tokens for which the kernel measured faster (0: never), and the
    microseconds behind it, [torch, kernel] per TOKENS entry."""

    up_to: dict[str, int] = field(default_factory=dict)
    us: dict[str, list[list[float]]] = field(default_factory=dict)


def measure_shape(lib: ctypes.CDLL, in_features: int, out_features: int, *, threads: int,
                  cache_bytes: int) -> list[list[float]]:
    g = torch.Generator().manual_seed(0)
    copies = max(2, min(64, -(-2 * cache_bytes // (4 * in_features * out_features))))
    weights = [torch.randn(out_features, in_features, generator=g) for _ in range(copies)]
    rows = []
    with torch.inference_mode():
        for m in TOKENS:
            x = torch.randn(m, in_features, generator=g)

            def plain(i: int, x: torch.Tensor = x) -> object:
                return F.linear(x, weights[i])

            def kernel(i: int, x: torch.Tensor = x) -> object:
                return linear(lib, x, weights[i], None, threads=threads)

            rows.append([per_call_us(plain, copies), per_call_us(kernel, copies)])
    return rows


def up_to(rows: list[list[float]]) -> int:
    """The largest TOKENS entry where the kernel beat torch by 5% (timing noise on a shared machine), below
    which it also won; 0 where it lost at one token."""
    best = 0
    for m, (torch_us, kernel_us) in zip(TOKENS, rows, strict=True):
        if kernel_us * 1.05 >= torch_us:
            break
        best = m
    return best


def measure_plan(lib: ctypes.CDLL, shapes: Iterable[tuple[int, int]], *, threads: int) -> F32Plan:
    cache_bytes = cpu_info().last_level_cache_bytes
    us = {shape_key(k, n): measure_shape(lib, k, n, threads=threads, cache_bytes=cache_bytes)
          for k, n in sorted(set(shapes))}
    return F32Plan(up_to={key: up_to(rows) for key, rows in us.items()}, us=us)


def f32_plan(lib: ctypes.CDLL, shapes: Iterable[tuple[int, int]]) -> F32Plan:
    """The cached plan for these (in, out) shapes on this CPU and thread count, measured first when there is
    none (a fraction of a second per shape, once)."""
    wanted = sorted(set(shapes))
    threads = torch.get_num_threads()
    source = native.read_source(__package__, "cpu_gemm_f32.cpp")
    key = [PLAN_VERSION, asdict(cpu_info()), torch.__version__, source, threads, wanted, TOKENS]
    return cached_plan("f32-plan", key, F32Plan, lambda: measure_plan(lib, wanted, threads=threads),
                       summary=lambda plan: plan.up_to)


class F32Linear(nn.Linear):
    """An nn.Linear (same parameters, same state dict) whose calls of at most `kernel_up_to` tokens take the
    float32 decode GEMM; others torch's."""

    lib: ctypes.CDLL | None = None
    kernel_up_to: int = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.lib is not None and x.dim() == 2 and 1 <= x.shape[0] <= self.kernel_up_to:
            return linear(self.lib, x, self.weight, self.bias, threads=torch.get_num_threads())
        return super().forward(x)


def use_f32_gemm(model: nn.Module, lib: ctypes.CDLL | None) -> int:
    """Turn the model's float32 CPU nn.Linear modules into F32Linear where the plan measured the kernel faster
    for their shape; the number routed. None: nothing changes."""
    linears = [m for m in model.modules() if type(m) is nn.Linear and m.weight.dtype == torch.float32
               and m.weight.device.type == "cpu"]
    if lib is None or not linears:
        return 0
    plan = f32_plan(lib, [(m.in_features, m.out_features) for m in linears])
    routed = 0
    for module in linears:
        limit = plan.up_to.get(shape_key(module.in_features, module.out_features), 0)
        if limit:
            module.__class__ = F32Linear  # same parameters and buffers: only the forward changes
            routed_module = cast(F32Linear, module)
            routed_module.lib, routed_module.kernel_up_to = lib, limit
            routed += 1
    return routed
