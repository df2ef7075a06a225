"""`ragsvc bench serving`: our engine against HF transformers (sequential and padded batch) and llama.cpp's
server, in one run, on one seeded workload (prompts 100-600 tokens, outputs 64-256, EOS ignored, greedy).

ragsvc is measured through the in-process LLMEngine, closed loop: `concurrency` requests are in flight, and a
new one is added as soon as one finishes (so continuous batching is what is measured, not HTTP). With an
arrival rate, ragsvc and llama.cpp are driven open loop instead (serving_arrivals.py says why and how). Also: KV
waste (slots reserved but not holding a token, averaged over the steps of the highest-concurrency run) and the
TTFT of a request sharing a 1,000-token prefix, cold (prefix never seen) vs warm (just served).
Warm-up requests are excluded everywhere. JSON goes to eval/results/ with the config and the git sha.

This module stays light (the CLI imports it at start-up, for SYSTEMS in its help); the run itself is in
`serving_run`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ragsvc.bench.serving_config import DEFAULT_OUT, OMP_WAIT, SPIN_COUNT, SYSTEMS, ServingBenchConfig

if TYPE_CHECKING:
    from ragsvc.bench.serving_workload import ServingBenchResult

__all__ = ["DEFAULT_OUT", "OMP_WAIT", "SPIN_COUNT", "SYSTEMS", "ServingBenchConfig", "run_serving_bench"]


def run_serving_bench(cfg: ServingBenchConfig,
                      on_progress: Callable[[ServingBenchResult], None] | None = None) -> ServingBenchResult:
    """Run every selected system on the same workloads; returns the result, whose `to_json` is the document
    {"runs": [{system, dtype, concurrency, tok_per_s, ttft_p50_ms, ttft_p99_ms, tpot_p50_ms, tpot_p99_ms,
    num_requests}], "kv_waste_pct", "prefix_ttft_ms": {"cold", "warm"}, "git_sha", "ratios_at_max_concurrency",
    "config", "notes", "omp_env"}. The thread wait policy must be in the environment before torch loads: the CLI sets it
    (`ragsvc.cli.bench.set_wait_policy`). `on_progress` gets the result so far after every system/level (the CLI
    writes it, so a run cut short keeps what it measured); the final result also has "ratios_by_concurrency"."""
    from ragsvc.bench.serving_run import run_all

    return run_all(cfg, on_progress)
