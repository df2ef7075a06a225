"""`ragsvc bench serving`: our engine against HF transformers (sequential and padded batch) and llama.cpp's
server, in one run, on one seeded workload (prompts 100-600 tokens, outputs 64-256, EOS ignored, greedy).

ragsvc is measured through the in-process LLMEngine, closed loop: `concurrency` requests are in flight, and a
new one is added as soon as one finishes (so continuous batching is what is measured, not HTTP). Also: KV
waste (slots reserved but not holding a token, averaged over the steps of the highest-concurrency run) and the
TTFT of a request sharing a 1,000-token prefix, cold (prefix never seen) vs warm (just served).
Warm-up requests are excluded everywhere. JSON goes to eval/results/ with the config and the git sha.

This module stays light (the CLI imports it at start-up, for SYSTEMS in its help); the run itself is in
`serving_run`.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SYSTEMS = ("ragsvc", "hf_sequential", "hf_batch", "llama_cpp")
OMP_WAIT = ("passive", "spin")
SPIN_COUNT = "30000"
DEFAULT_OUT = Path("eval/results/bench_serving.json")


@dataclass(frozen=True)
class ServingBenchConfig:
    model: str = "smollm2"
    dtype: str = "auto"
    """For ragsvc and HF alike (auto = bf16 with avx512_bf16); llama.cpp runs the GGUF's own quantisation."""
    concurrency: tuple[int, ...] = (1, 8, 32)
    num_requests: int | None = None
    """Requests per concurrency level; None = max(8, 2 x concurrency)."""
    prompt_tokens: tuple[int, int] = (100, 600)
    output_tokens: tuple[int, int] = (64, 256)
    hf_sequential_requests: int = 4
    """HF sequential runs ~20 tok/s: a few requests give its rate; it is reported at concurrency 1 only."""
    systems: tuple[str, ...] = SYSTEMS
    threads: int = 2
    seed: int = 0
    prefix_tokens: int = 1000
    prefix_trials: int = 3
    kv_cache_bytes: int = 1 << 30
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 2048
    llama_server: str | None = None
    """Path to llama.cpp's llama-server; None = look on PATH."""
    llama_threads: int | None = None
    """llama.cpp's thread count; None = `threads`. (In this sandbox llama.cpp's threadpool with 2 threads ran at
    ~0.7 tok/s against ~34 tok/s with 1, so its best setting may not be ours.)"""
    omp_wait: str = "passive"
    """How idle threads wait, for every system in the run (set before torch loads):
    passive: OMP_WAIT_POLICY=PASSIVE (they sleep at once; llama.cpp --poll 0), what `ragsvc` itself sets,
      because spinning threads starve each other on a shared box (one core busy with other work: a c=32 run of
      ragsvc was 2.3x slower spinning than passive). It handicaps HF sequential most: batch-1 decode is a
      chain of tiny parallel regions, each paying a thread wake-up (12.5-16.9 tok/s passive vs 21.8-23.0 spinning
      here, on an EPYC VM).
    spin: GOMP_SPINCOUNT=30000 (~0.3 ms of spinning before sleeping, by libgomp's estimate; llama.cpp --poll 50),
      closer to libgomp's own default (~3 ms), i.e. how HF runs out of the box: each system near its best on a
      quiet machine."""
    log_dir: str = "eval/results"
    cache_dir: str | None = None
    """Where the engine caches de-quantised weights (None = the engine's default, <data_dir>/models)."""

    def __post_init__(self) -> None:
        unknown = set(self.systems) - set(SYSTEMS)
        if unknown:
            raise ValueError(f"unknown systems {sorted(unknown)}; choose from {', '.join(SYSTEMS)}")
        if self.omp_wait not in OMP_WAIT:
            raise ValueError(f"omp_wait {self.omp_wait!r}: choose {' or '.join(OMP_WAIT)}")
        if not self.concurrency or min(self.concurrency) < 1:
            raise ValueError("concurrency levels must be positive integers, e.g. 1,8,32")
        for name in ("prompt_tokens", "output_tokens"):
            lo, hi = getattr(self, name)
            if not 1 <= lo <= hi:
                raise ValueError(f"{name} range ({lo}, {hi}) must satisfy 1 <= low <= high")

    def requests_at(self, concurrency: int) -> int:
        return self.num_requests or max(8, 2 * concurrency)


def run_serving_bench(cfg: ServingBenchConfig) -> dict[str, Any]:
    """Run every selected system on the same workloads; returns the JSON document:
    {"runs": [{system, dtype, concurrency, tok_per_s, ttft_p50_ms, ttft_p99_ms, tpot_p50_ms, tpot_p99_ms,
    num_requests}], "kv_waste_pct", "prefix_ttft_ms": {"cold", "warm"}, "git_sha", "ratios_at_max_concurrency",
    "config", "notes"}."""
    _set_wait_policy(cfg)
    from ragsvc.bench.serving_run import run_all

    return run_all(cfg)


def _set_wait_policy(cfg: ServingBenchConfig) -> None:
    """libgomp reads its wait policy once, when torch loads it: set it before torch is imported. GOMP_SPINCOUNT,
    when set, overrides OMP_WAIT_POLICY; a value the caller exported wins over cfg (the JSON records both)."""
    if "torch" in sys.modules:
        logger.warning("torch is already imported: omp_wait=%s cannot take effect in this process", cfg.omp_wait)
    if cfg.omp_wait == "spin":
        os.environ.setdefault("GOMP_SPINCOUNT", SPIN_COUNT)
        if os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE":  # the CLI's default; the flag asked to spin
            del os.environ["OMP_WAIT_POLICY"]
    else:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        if "GOMP_SPINCOUNT" in os.environ:
            logger.warning("GOMP_SPINCOUNT=%s is set: it overrides OMP_WAIT_POLICY", os.environ["GOMP_SPINCOUNT"])
