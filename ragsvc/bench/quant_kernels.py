"""`ragsvc bench quant-kernels`: the quantised linears (int8, q4) against the bf16 linear they replace, on
one model's decode-step shapes, on the device at hand.

Each case times `QuantLinear.forward` — whatever kernel it picks on that device (the Triton kernels on CUDA,
the C++ ones on a CPU) — and the peer, torch's own bf16 `F.linear` (cuBLAS on CUDA, oneDNN on a CPU), on the
same activations. Decode streams every weight once per step, so a weight that sits in the cache from the
previous call would flatter either side: each format cycles through enough copies of its weight to outgrow
the last-level cache (the H200 keeps 60 MB in L2; a 1.5B model's largest matrix is 55 MB in bf16).
Reported per (linear, tokens): microseconds a call, weight bytes streamed per second, and bf16's time over
each format's (above 1 = the quantised linear is faster). `step_us` sums one decoder layer's linears times
the number of layers: the part of a decode step the weight format decides.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F

from ragsvc.bench.provenance import cpu_model, package_git_sha
from ragsvc.serving.config import EngineConfig, resolve_device
from ragsvc.serving.layers import cpu_quant
from ragsvc.serving.layers.cpu_tuning import quant_plan
from ragsvc.serving.layers.quant import QuantWeight, quantise
from ragsvc.serving.layers.quant_linear import QuantLinear

logger = logging.getLogger(__name__)

SHAPES: dict[str, dict[str, Any]] = {
    # (in, out) of one decoder layer's linears, as the engine fuses them, and the layer count.
    "qwen2.5-1.5b": {"layers": 28, "linears": {"qkv": (1536, 2048), "o": (1536, 1536),
                                               "gate_up": (1536, 17920), "down": (8960, 1536)}},
    "smollm2": {"layers": 30, "linears": {"qkv": (576, 960), "o": (576, 576),
                                          "gate_up": (576, 3072), "down": (1536, 576)}},
}
FORMATS = ("int8", "q4")
CACHE_BYTES = 256 << 20
"""Bytes of weight copies each format cycles through: several times any last-level cache it meets."""


@dataclass(frozen=True)
class KernelCase:
    linear: str
    in_features: int
    out_features: int
    tokens: int
    us: dict[str, float]
    """Microseconds a call, per format (bf16 and each quantised one)."""
    gb_per_s: dict[str, float]
    """Weight bytes (with scales) streamed per second, per format."""
    speedup_vs_bf16: dict[str, float]


@dataclass(frozen=True)
class KernelBenchResult:
    model: str
    device: str
    device_name: str
    git_sha: str
    cases: list[KernelCase] = field(default_factory=list)
    step_us: dict[str, dict[str, float]] = field(default_factory=dict)
    """{tokens: {format: microseconds of every layer's linears}} (the LM head is left out)."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _timer(device: torch.device) -> Callable[[Callable[[], object], int], float]:
    """Seconds per call of fn, over `reps` calls after a warm-up, measured the way the device needs."""

    def cuda_time(fn: Callable[[], object], reps: int) -> float:
        for _ in range(3):
            fn()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        for _ in range(reps):
            fn()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end) / 1000 / reps

    def cpu_time(fn: Callable[[], object], reps: int) -> float:
        for _ in range(2):
            fn()
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        return (time.perf_counter() - start) / reps

    return cuda_time if device.type == "cuda" else cpu_time


def _cycled(calls: list[Callable[[], object]]) -> Callable[[], object]:
    state = {"i": 0}

    def call() -> object:
        state["i"] = (state["i"] + 1) % len(calls)
        return calls[state["i"]]()

    return call


def bench_linear(name: str, in_features: int, out_features: int, tokens: int, *, device: torch.device,
                 reps: int, cache_bytes: int = CACHE_BYTES, seed: int = 0) -> KernelCase:
    g = torch.Generator().manual_seed(seed)
    weight = (torch.randn((out_features, in_features), generator=g) * in_features**-0.5).to(torch.bfloat16)
    x = torch.randn((tokens, in_features), generator=g).to(device, torch.bfloat16)  # (tokens, in)
    copies = max(2, math.ceil(cache_bytes / weight.nbytes))
    timer = _timer(device)
    us, rate = {}, {}
    bf16 = [weight.to(device) for _ in range(copies)]
    us["bf16"] = timer(_cycled([partial(F.linear, x, w) for w in bf16]), reps) * 1e6
    rate["bf16"] = weight.nbytes / us["bf16"] / 1e3
    del bf16
    for fmt in FORMATS:
        qw = quantise(weight.float(), fmt).to(device)
        layers = [QuantLinear(qw, None)]
        layers += [QuantLinear(_copy(qw), None) for _ in range(max(2, math.ceil(cache_bytes / qw.nbytes())) - 1)]
        if device.type == "cpu":  # the C++ kernels and the blocking measured for this CPU, as the engine takes them
            lib = cpu_quant.load()
            plan = quant_plan(lib) if lib is not None else None
            for layer in layers:
                layer.use_kernels(lib, plan)
        us[fmt] = timer(_cycled([partial(m, x) for m in layers]), reps) * 1e6
        rate[fmt] = qw.nbytes() / us[fmt] / 1e3
    speedup = {fmt: round(us["bf16"] / us[fmt], 2) for fmt in FORMATS}
    return KernelCase(name, in_features, out_features, tokens, {k: round(v, 2) for k, v in us.items()},
                      {k: round(v, 1) for k, v in rate.items()}, speedup)


def _copy(qw: QuantWeight) -> QuantWeight:
    return replace(qw, data=qw.data.clone(), scale=qw.scale.clone(),
                   offset=None if qw.offset is None else qw.offset.clone())


def run_kernel_bench(*, model: str, tokens: tuple[int, ...], device: str, reps: int,
                     cache_bytes: int = CACHE_BYTES) -> KernelBenchResult:
    if model not in SHAPES:
        raise ValueError(f"model {model!r}: choose one of {', '.join(SHAPES)}")
    if not tokens or min(tokens) < 1 or max(tokens) > 4096:
        raise ValueError("tokens must be whole numbers from 1 to 4096, e.g. 1,8,32")
    if not 1 <= reps <= 100_000:
        raise ValueError(f"reps must be from 1 to 100000, got {reps}")
    dev = resolve_device(EngineConfig(device=device))  # refuses an unknown device, or a GPU torch does not see
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_model()
    shape = SHAPES[model]
    result = KernelBenchResult(model=model, device=str(dev), device_name=name, git_sha=package_git_sha())
    for t in tokens:
        total = dict.fromkeys(("bf16", *FORMATS), 0.0)
        for linear, (fan_in, fan_out) in shape["linears"].items():
            case = bench_linear(linear, fan_in, fan_out, t, device=dev, reps=reps, cache_bytes=cache_bytes)
            logger.info("%s tokens=%d: %s", linear, t, case.us)
            result.cases.append(case)
            for fmt, value in case.us.items():
                total[fmt] += value * shape["layers"]
        result.step_us[str(t)] = {k: round(v, 1) for k, v in total.items()}
    return result
