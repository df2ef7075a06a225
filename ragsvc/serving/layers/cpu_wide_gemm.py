"""Which precision a bf16 linear of many tokens (a prompt chunk) multiplies in on this CPU: measured, not assumed.

A bf16 GEMM is only worth its name where the CPU multiplies bf16 pairs faster than fp32 ones: AMX on recent
Xeons, or AVX512-BF16 on Zen 4, where `vdpbf16ps` does twice the work of an fp32 FMA. On a Xeon whose
hypervisor hides AMX it measured at about half the fp32 FMA rate instead: oneDNN's bf16 GEMM reached about
85 GFLOP/s per core against MKL's fp32 159 on the same shapes (Xeon model 207, 2 vCPUs), and the serving
benchmark's prompt steps spent most of their time in it. Widening the weight and the activations to fp32 for the
GEMM and rounding the product back to bf16 then wins once enough tokens share the widened weight: the products of
bf16 pairs are exact in fp32 and both paths accumulate in fp32, so the results differ only in the order of the
sums (and the widened weight is made per call, so nothing more is held).

So at load `wide_plan` times, for each weight shape, each of TOKENS and both the engine's thread count and half
of it (a split step's halves run on half the threads), oneDNN's packed bf16 linear against widening, and keeps
per shape and thread count the smallest token count from which widening won at every measured count above it.
On a CPU with a fast bf16 unit widening should not win, and then nothing changes. The plan is cached as JSON like
cpu_gemm_plan's, keyed by the CPU, torch, the thread count and the shapes.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from ragsvc.serving.layers.cpu_gemm_plan import shape_key
from ragsvc.serving.layers.cpu_tuning import cpu_info
from ragsvc.serving.layers.plan_cache import cached_plan

logger = logging.getLogger(__name__)

PLAN_VERSION = 1
TOKENS = (64, 128, 256, 512, 1024)
"""Token counts measured. A call above the largest takes the largest's choice: widening only gets cheaper per
token as the token count grows (the weight is widened once per call)."""
MAX_MEASURED_FLOP = 4e9
"""Counts whose GEMM is larger than this are not timed (an LM head of 50k-150k rows would take seconds at 1024
tokens, and only ever sees the few rows being sampled); they take the largest measured count's choice."""
NEVER = 0


@dataclass(frozen=True)
class WidePlan:
    from_tokens: dict[str, dict[str, int]]
    """"in x out" -> {threads: the smallest token count from which widening to fp32 is faster, or NEVER (0)}."""
    us: dict[str, dict[str, list[list[float]]]]
    """What was measured: per shape and thread count, per measured TOKENS entry [oneDNN bf16, widened fp32]
    microseconds."""

    def start(self, in_features: int, out_features: int) -> dict[int, int]:
        """threads -> the token count from which this shape widens (only thread counts where it ever does)."""
        row = self.from_tokens.get(shape_key(in_features, out_features), {})
        return {int(threads): tokens for threads, tokens in row.items() if tokens != NEVER}


def widened_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x (tokens, in) bf16 @ weight (out, in) bf16 -> (tokens, out) bf16, multiplied and summed in fp32."""
    b = None if bias is None else bias.float()
    return F.linear(x.float(), weight.float(), b).to(x.dtype)


def first_winning(tokens: Iterable[int], rows: list[list[float]]) -> int:
    """The smallest token count from which widening ([1]) beat oneDNN ([0]) at every measured count; NEVER if it
    did not win at the largest."""
    start = NEVER
    for m, (bf16_us, wide_us) in zip(tokens, rows, strict=False):
        start = (start or m) if wide_us < bf16_us else NEVER
    return start


def _median_us(fn: Callable[[], object]) -> float:
    fn()
    times = []
    for _ in range(3):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e6)
    return round(statistics.median(times), 1)


def measure_shape(in_features: int, out_features: int, *, threads: int) -> list[list[float]]:
    """Per measured TOKENS entry, [oneDNN bf16, widened fp32] microseconds for this shape on `threads` threads."""
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(out_features, in_features, generator=g).to(torch.bfloat16)
    packed = torch.ops.mkldnn._reorder_linear_weight(weight, TOKENS[0])
    before = torch.get_num_threads()
    rows = []
    try:
        torch.set_num_threads(threads)
        with torch.inference_mode():
            for m in TOKENS:
                if 2 * m * in_features * out_features > MAX_MEASURED_FLOP:
                    break
                x = torch.randn(m, in_features, generator=g).to(torch.bfloat16)

                def onednn(x: torch.Tensor = x) -> object:
                    return torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")

                def widened(x: torch.Tensor = x) -> object:
                    return widened_linear(x, weight, None)

                rows.append([_median_us(onednn), _median_us(widened)])
    finally:
        torch.set_num_threads(before)
    return rows


def thread_counts(threads: int) -> list[int]:
    """The engine's thread count and, where steps can be split, half of it."""
    return sorted({threads, max(1, threads // 2)})


def measure_plan(shapes: Iterable[tuple[int, int]], *, threads: int) -> WidePlan:
    us: dict[str, dict[str, list[list[float]]]] = {}
    for k, n in sorted(set(shapes)):
        us[shape_key(k, n)] = {str(t): measure_shape(k, n, threads=t) for t in thread_counts(threads)}
    from_tokens = {key: {t: first_winning(TOKENS, rows) for t, rows in per.items()} for key, per in us.items()}
    return WidePlan(from_tokens=from_tokens, us=us)


def wide_plan(shapes: Iterable[tuple[int, int]]) -> WidePlan:
    """The cached plan for these (in, out) shapes on this CPU and thread count, measured first when there is
    none (a few seconds, once)."""
    wanted = sorted(set(shapes))
    threads = torch.get_num_threads()
    key = [PLAN_VERSION, asdict(cpu_info()), torch.__version__, threads, wanted, TOKENS, MAX_MEASURED_FLOP]
    return cached_plan("wide-plan", key, WidePlan, lambda: measure_plan(wanted, threads=threads),
                       summary=lambda plan: plan.from_tokens)
