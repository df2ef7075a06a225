"""Which GEMM a bf16 linear of a few tokens takes on this CPU: measured, not assumed.

oneDNN's bf16 linear and cpu_gemm_bf16's kernel trade places with the shape and the token count, and the
balance moves with the CPU's caches and vector units. So at first use `gemm_plan` times, for each weight
shape of the model and each of TOKENS, oneDNN against the kernel in both its forms (`vdpbf16ps`, or fp32 FMAs
on weights widened in registers: which is faster depends on the CPU's bf16 unit), all on all of torch's
threads, on copies of the weight that together outgrow the last-level cache (a decode step streams its weights
from memory), and keeps the fastest. All run on the same threads on purpose: a one-thread kernel wins alone (no
sleeping thread to wake) but only moves that wake to the next parallel operation of the forward, and measured
in the engine it made a decode-heavy run slower. The plan is cached as JSON beside the compiled kernels, keyed
by the CPU (cpu_tuning.cpu_info), torch, the kernel's source, the thread count and the shapes; later starts
read it back.
"""

from __future__ import annotations

import bisect
import ctypes
import logging
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

import torch

from ragsvc import native
from ragsvc.serving.layers import cpu_gemm_bf16
from ragsvc.serving.layers.cpu_tuning import cpu_info
from ragsvc.serving.layers.plan_cache import cached_plan

logger = logging.getLogger(__name__)

PLAN_VERSION = 3
TOKENS = (1, 8, 16, 32, 64)
"""Token counts measured; a call takes the choice of the smallest measured count at or above its own, and
oneDNN above the largest (prompt chunks: its GEMM is the faster one there)."""
ONEDNN = 0


@dataclass(frozen=True)
class GemmPlan:
    threads: dict[str, list[int]]
    """"in x out" -> per TOKENS entry, the kernel's thread count, or ONEDNN (0) where oneDNN was faster."""
    us: dict[str, list[list[float]]]
    """What was measured: per shape and TOKENS entry, microseconds for [oneDNN, the kernel with `vdpbf16ps`,
    the kernel with fp32 FMAs]."""
    fma: dict[str, list[bool]] = field(default_factory=dict)
    """"in x out" -> per TOKENS entry, True where the kernel's fp32-FMA form beat its `vdpbf16ps` form."""

    def choice(self, in_features: int, out_features: int, tokens: int) -> int:
        """Threads for the kernel on a call of `tokens` tokens, or ONEDNN."""
        return self.kernel(in_features, out_features, tokens)[0]

    def kernel(self, in_features: int, out_features: int, tokens: int) -> tuple[int, bool]:
        """(threads for the kernel or ONEDNN, whether in its fp32-FMA form) for a call of `tokens` tokens."""
        key = shape_key(in_features, out_features)
        row = self.threads.get(key)
        i = bisect.bisect_left(TOKENS, tokens)
        if row is None or i == len(TOKENS):
            return ONEDNN, False
        fma = self.fma.get(key)
        return row[i], bool(fma and fma[i])

    def uses_kernel(self, in_features: int, out_features: int) -> bool:
        return any(t != ONEDNN for t in self.threads.get(shape_key(in_features, out_features), []))


def shape_key(in_features: int, out_features: int) -> str:
    return f"{in_features}x{out_features}"


def pick(us: list[float], threads: int) -> int:
    """[oneDNN, kernel, (kernel with FMAs)] microseconds -> ONEDNN, or `threads` for the kernel where a form of it
    was faster (ties: oneDNN)."""
    return threads if min(us[1:]) < us[0] else ONEDNN


def pick_fma(us: list[float]) -> bool:
    """Whether the kernel's FMA form (us[2], where measured) beat its `vdpbf16ps` form (ties: `vdpbf16ps`)."""
    return len(us) > 2 and us[2] < us[1]


def per_call_us(fn: Callable[[int], object], copies: int, budget_s: float = 0.004) -> float:
    """Median over 3 rounds of microseconds per call, each round at least `budget_s` long and one pass over the
    weight copies (3 calls at least), cycling through them: `fn(i)` runs one call on copy i."""
    fn(0)
    rounds = []
    for _ in range(3):
        calls, start = 0, time.perf_counter()
        while calls < max(3, copies) or time.perf_counter() - start < budget_s:
            fn(calls % copies)
            calls += 1
        rounds.append((time.perf_counter() - start) / calls * 1e6)
    return round(statistics.median(rounds), 1)


def measure_shape(lib: ctypes.CDLL, in_features: int, out_features: int, *, threads: int,
                  cache_bytes: int) -> list[list[float]]:
    """Per TOKENS entry, [oneDNN, kernel, kernel with FMAs] microseconds for this shape, all on `threads`
    threads."""
    g = torch.Generator().manual_seed(0)
    copies = max(1, min(64, -(-cache_bytes // (2 * in_features * out_features))))
    weights = [torch.randn(out_features, in_features, generator=g).to(torch.bfloat16) for _ in range(copies)]
    dnn = [torch.ops.mkldnn._reorder_linear_weight(w, 32) for w in weights]
    own = [cpu_gemm_bf16.pack(lib, w) for w in weights]
    rows = []
    with torch.inference_mode():
        for m in TOKENS:
            x = torch.randn(m, in_features, generator=g).to(torch.bfloat16)

            def onednn(i: int, x: torch.Tensor = x) -> object:
                return torch.ops.mkldnn._linear_pointwise(x, dnn[i], None, "none", [], "")

            def kernel(i: int, x: torch.Tensor = x) -> object:
                return cpu_gemm_bf16.linear(lib, x, own[i], threads=threads)

            def kernel_fma(i: int, x: torch.Tensor = x) -> object:
                return cpu_gemm_bf16.linear(lib, x, own[i], threads=threads, fma=True)

            rows.append([per_call_us(onednn, copies), per_call_us(kernel, copies),
                         per_call_us(kernel_fma, copies)])
    return rows


def measure_plan(lib: ctypes.CDLL, shapes: Iterable[tuple[int, int]], *, threads: int) -> GemmPlan:
    cache_bytes = cpu_info().last_level_cache_bytes
    us = {shape_key(k, n): measure_shape(lib, k, n, threads=threads, cache_bytes=cache_bytes)
          for k, n in sorted(set(shapes))}
    return GemmPlan(threads={key: [pick(row, threads) for row in rows] for key, rows in us.items()}, us=us,
                    fma={key: [pick_fma(row) for row in rows] for key, rows in us.items()})


def gemm_plan(lib: ctypes.CDLL, shapes: Iterable[tuple[int, int]]) -> GemmPlan:
    """The cached plan for these (in, out) shapes on this CPU and thread count, measured first when there is
    none (about a second per shape, once)."""
    wanted = sorted(set(shapes))
    threads = torch.get_num_threads()
    source = native.read_source(__package__, "cpu_gemm_bf16.cpp")
    key = [PLAN_VERSION, asdict(cpu_info()), torch.__version__, source, threads, wanted, TOKENS]
    return cached_plan("gemm-plan", key, GemmPlan, lambda: measure_plan(lib, wanted, threads=threads),
                       summary=lambda plan: plan.threads)
