"""`ragsvc bench agents`: what sending each tick's calls together buys a generative-agents simulation.

The same short run of a town (five residents by default) twice in one process: batched (each phase's calls of
every agent in one generate_many, which the engine's continuous batching serves as one batch) and sequential
(the same calls one at a time, the peer). Each mode gets a fresh engine, warmed up with one short call, so
neither inherits the other's prefix cache. Greedy decoding and one seed: both modes simulate the same town
from the same state, and the JSON says whether their transcripts came out the same (batched and unbatched
arithmetic may round differently and send the two runs different ways; the throughput comparison holds
either way, since it counts agent-steps and reports the calls and tokens each mode made).

Reported per mode: agent-steps (one per resident per tick) per minute of wall time, calls, batches, prompt
tokens, the share of them served from the prefix cache (the town and persona come first in every prompt,
so they are a shared prefix), completion tokens, time inside the model. Then the ratio batched/sequential,
with the targets (>= 3x, >= 50% cached), the CPU model and the git sha.

Where the time goes, per phase and mode (`phases`): calls, batches and their mean size, prompt / cached /
completion tokens, model seconds, and the critical seconds (each batch's longest call, measured call by call
in the sequential mode; agents/sim_calls.py). `bound_speedup` is the sequential model time over its critical
time: what batching the same calls could gain at most if a batch cost no more than its longest call. A tick's
phases depend on each other (where agents are decides who decides and who talks; a conversation's turns follow
one another), so calls of one phase are all a batch can hold.

The batched mode primes each batch's shared prefix with a one-token call (agents/sim_calls.py): those calls
are counted apart (`primes`), and the prompt tokens they computed are subtracted from the cached ones, so the
cached share is what the engine did not compute. Each mode also records the process's CPU seconds and the
machine's 1-minute load average before and after it: on shared cores, a load well above the engine's threads
during one mode says the wall-time ratio was disturbed.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ragsvc.agents.sim_config import SimulationConfig
from ragsvc.agents.simulation import TRACE_FILE, TRANSCRIPT_FILE, run_simulation
from ragsvc.bench.provenance import cpu_model, package_git_sha
from ragsvc.embed.embedder import Embedder
from ragsvc.llm.in_process import InProcessGenerator
from ragsvc.serving.config import EngineConfig

TARGET_SPEEDUP = 3.0
TARGET_CACHED_SHARE = 0.5
MODES = ("batched", "sequential")


@dataclass(frozen=True, slots=True)
class AgentsBenchConfig:
    town: Path = Path("agents/town")
    hours: float = 0.5
    tick_minutes: int = 15
    seed: int = 0
    engine: EngineConfig = field(default_factory=EngineConfig)


@dataclass(frozen=True, slots=True)
class ModeResult:
    mode: str
    ticks: int
    agent_steps: int
    wall_s: float
    agent_steps_per_min: float
    calls: int
    batches: int
    prompt_tokens: int
    cached_prompt_tokens: int
    cached_share: float
    completion_tokens: int
    model_s: float
    calls_by_phase: Mapping[str, int]
    primes: int
    cpu_s: float
    """User + system CPU seconds of this process during the mode (all its threads)."""
    load_before: float
    load_after: float
    """The machine's 1-minute load average when the mode started and ended."""
    model_s_by_phase: Mapping[str, float]
    critical_s: float
    """Sum over batches of the longest call (sequential) or of the batch (batched); see the module docstring."""
    phases: Mapping[str, Mapping[str, float]]
    """Per phase: calls, batches, mean_batch, prompt/cached/completion tokens, model_s, critical_s."""


@dataclass(frozen=True, slots=True)
class AgentsBenchResult:
    config: Mapping[str, Any]
    modes: Mapping[str, ModeResult]
    speedup: float
    """agent-steps per minute, batched / sequential."""
    cached_share: float
    """Of the batched run's prompt tokens, the share served from the prefix cache."""
    same_transcript: bool
    bound_speedup: float
    """Sequential model time over its critical time: the most batching these calls could gain."""
    targets: Mapping[str, Any]
    cpu_model: str
    git_sha: str

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "modes": {m: asdict(r) for m, r in self.modes.items()}}


def run_agents_bench(cfg: AgentsBenchConfig, *, embedder: Embedder, work_dir: Path,
                     progress: Callable[[str], Callable[[int, int], None]] | None = None) -> AgentsBenchResult:
    """Both modes into fresh folders under `work_dir` (emptied first); see the module docstring."""
    modes: dict[str, ModeResult] = {}
    transcripts: dict[str, list[dict[str, Any]]] = {}
    for mode in MODES:
        out = Path(work_dir) / mode
        shutil.rmtree(out, ignore_errors=True)
        config = SimulationConfig(hours=cfg.hours, tick_minutes=cfg.tick_minutes, seed=cfg.seed,
                                  model=cfg.engine.model, sequential=mode == "sequential")
        with InProcessGenerator.from_config(cfg.engine) as generator:
            generator.generate("Warm up the engine.", max_tokens=4)
            load_before, cpu_before = os.getloadavg()[0], time.process_time()
            started = time.perf_counter()
            run_simulation(cfg.town, out, config=config, generator=generator, embedder=embedder,
                           progress=progress(mode) if progress is not None else None)
            wall_s = time.perf_counter() - started
            machine = {"cpu_s": round(time.process_time() - cpu_before, 2), "load_before": round(load_before, 2),
                       "load_after": round(os.getloadavg()[0], 2)}
        modes[mode] = _summarise(mode, out, wall_s, machine)
        transcripts[mode] = [json.loads(line) for line in (out / TRANSCRIPT_FILE).read_text().splitlines()]
    batched, sequential = modes["batched"], modes["sequential"]
    speedup = batched.agent_steps_per_min / sequential.agent_steps_per_min if sequential.agent_steps_per_min else 0.0
    return AgentsBenchResult(
        config={"town": cfg.town.name, "hours": cfg.hours, "tick_minutes": cfg.tick_minutes, "seed": cfg.seed,
                "engine": {k: v for k, v in asdict(cfg.engine).items() if k != "cache_dir"}},
        modes=modes, speedup=round(speedup, 3), cached_share=batched.cached_share,
        same_transcript=transcripts["batched"] == transcripts["sequential"],
        bound_speedup=round(sequential.model_s / sequential.critical_s, 3) if sequential.critical_s else 0.0,
        targets={"speedup": TARGET_SPEEDUP, "speedup_met": speedup >= TARGET_SPEEDUP,
                 "cached_share": TARGET_CACHED_SHARE, "cached_share_met": batched.cached_share >= TARGET_CACHED_SHARE},
        cpu_model=cpu_model(), git_sha=package_git_sha())


def _summarise(mode: str, out: Path, wall_s: float, machine: Mapping[str, float]) -> ModeResult:
    trace = [json.loads(line) for line in (out / TRACE_FILE).read_text().splitlines()]
    total = {k: sum(t.get(k, 0) for t in trace) for k in (
        "agent_steps", "calls", "batches", "prompt_tokens", "cached_prompt_tokens", "completion_tokens", "model_ms",
        "primes", "prime_prompt_tokens")}
    prompt = total["prompt_tokens"]
    cached = max(total["cached_prompt_tokens"] - total["prime_prompt_tokens"], 0)
    phases: dict[str, int] = {}
    phase_ms: dict[str, float] = {}
    for t in trace:
        for phase, n in t["calls_by_phase"].items():
            phases[phase] = phases.get(phase, 0) + n
        for phase, ms in t.get("model_ms_by_phase", {}).items():
            phase_ms[phase] = phase_ms.get(phase, 0.0) + ms
    profile = phase_profile(trace)
    return ModeResult(
        mode=mode, ticks=len(trace), agent_steps=total["agent_steps"], wall_s=round(wall_s, 2),
        agent_steps_per_min=round(total["agent_steps"] / (wall_s / 60.0), 3) if wall_s > 0 else 0.0,
        calls=total["calls"], batches=total["batches"], prompt_tokens=total["prompt_tokens"],
        cached_prompt_tokens=cached, cached_share=round(cached / prompt, 4) if prompt else 0.0,
        completion_tokens=total["completion_tokens"], model_s=round(total["model_ms"] / 1000.0, 2),
        calls_by_phase=dict(sorted(phases.items())), primes=total["primes"], cpu_s=machine["cpu_s"],
        load_before=machine["load_before"], load_after=machine["load_after"],
        model_s_by_phase={k: round(v / 1000.0, 2) for k, v in sorted(phase_ms.items())},
        critical_s=round(sum(p["critical_s"] for p in profile.values()), 2), phases=profile)


def phase_profile(trace: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Per phase over a run's trace: calls, batches, mean batch size, tokens, model and critical seconds."""
    sums: dict[str, dict[str, float]] = {}
    for t in trace:
        for phase, sizes in t.get("batch_sizes_by_phase", {}).items():
            row = sums.setdefault(phase, dict.fromkeys(
                ("calls", "batches", "prompt_tokens", "cached_tokens", "completion_tokens", "model_s", "critical_s"),
                0.0))
            row["calls"] += sum(sizes)
            row["batches"] += len(sizes)
            tokens = t.get("tokens_by_phase", {}).get(phase, {})
            for key in ("prompt", "cached", "completion"):
                row[f"{key}_tokens"] += tokens.get(key, 0)
            row["model_s"] += t.get("model_ms_by_phase", {}).get(phase, 0.0) / 1000.0
            row["critical_s"] += t.get("critical_ms_by_phase", {}).get(phase, 0.0) / 1000.0
    return {phase: {**{k: round(v, 2) if k.endswith("_s") else int(v) for k, v in row.items()},
                    "mean_batch": round(row["calls"] / row["batches"], 2) if row["batches"] else 0.0}
            for phase, row in sorted(sums.items())}
