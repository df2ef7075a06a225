"""Where a decode step's time goes: the engine's own steps, with each part of the forward timed in place.

`ragsvc bench decode-profile` fills the engine with `concurrency` random-token prompts, runs them until every
one has its first token (prefill, not profiled), then times `steps` decode steps with a wall-clock timer
around each part: every linear by its role (qkv / o / gate_up / down projections, the LM head), attention,
the norms, rotary, SiLU x up, and, outside the forward, the scheduler, batch preparation and sampling.
"python + other" is what the forward spends outside those parts (module dispatch, embedding, residual
views): the share a fused per-layer path could save. Timers are installed on the instances and module
attributes for the run only and removed afterwards, so the engine is unchanged; they cost ~1 us a call.

`profile_workload` does the same over a whole level of `ragsvc bench serving` (closed loop, every step timed),
filing each step under "prefill" (steps with prompt tokens, and the decodes that ride along) or "decode": where
a 32-concurrent run's time goes, GEMMs against the rest, in the steps that read prompts and in those that do not.

Steps run whole while profiled (the runner's split of large steps into two threaded halves is taken off for
the run): each part's timer would otherwise add up both halves' time.

Why not torch.profiler: the kernels are ctypes calls it does not see, and its own per-op overhead is of the
order of the small kernels measured here.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ragsvc.bench.serving_run import run_ragsvc
from ragsvc.bench.serving_workload import BenchRequest
from ragsvc.serving.engine import LLMEngine
from ragsvc.serving.layers import cpu_fused
from ragsvc.serving.layers.norm import RMSNorm
from ragsvc.serving.models import llama
from ragsvc.serving.sampling_params import SamplingParams

LINEAR_ROLES = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj", "lm_head")
KERNEL_PARTS = (*LINEAR_ROLES, "attention", "norm", "rotary", "silu_mul")
"""Parts timed inside the model's forward; the rest of the forward is "python + other"."""


@dataclass(frozen=True)
class DecodeProfile:
    concurrency: int
    prompt_tokens: int
    steps: int
    ms_per_step: float
    """Wall time of one engine step (schedule, forward, sampling), averaged over the decode steps."""
    parts_ms: dict[str, float]
    """Milliseconds per step of each part (KERNEL_PARTS, "python + other", "forward", "schedule",
    "prepare", "sample", and "step, outside these": the rest of the engine step, KV block copies and
    bookkeeping)."""
    calls_per_step: dict[str, int]


class _Timers:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def wrap(self, fn: Callable[..., Any], part: str) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[part] += time.perf_counter() - start
                self.calls[part] += 1

        return timed


@contextlib.contextmanager
def _patched(targets: list[tuple[object, str, str]], timers: _Timers) -> Iterator[None]:
    """Replace each (object, attribute) with its timed version for the block; put the originals back."""
    saved: list[tuple[object, str, Any, bool]] = []
    try:
        for obj, attr, part in targets:
            own = attr in vars(obj)  # an instance attribute (restored) or a class method (deleted again)
            original = getattr(obj, attr)
            saved.append((obj, attr, vars(obj).get(attr), own))
            setattr(obj, attr, timers.wrap(original, part))
        yield
    finally:
        for obj, attr, value, own in reversed(saved):
            if own:
                setattr(obj, attr, value)
            else:
                delattr(obj, attr)


@contextlib.contextmanager
def _whole_steps(engine: LLMEngine) -> Iterator[None]:
    """Every step runs whole for the block (the runner splits none into halves), then as configured again."""
    halves, engine.runner.halves = engine.runner.halves, None
    try:
        yield
    finally:
        engine.runner.halves = halves


def _targets(engine: LLMEngine) -> list[tuple[object, str, str]]:
    model: nn.Module = engine.runner.model
    targets: list[tuple[object, str, str]] = []
    for name, module in model.named_modules():
        role = name.rsplit(".", 1)[-1]
        if role in LINEAR_ROLES:
            targets.append((module, "forward", role))
        elif isinstance(module, RMSNorm):
            targets += [(module, "forward", "norm"), (module, "forward_residual", "norm")]
    targets += [(llama, "paged_attention", "attention"), (cpu_fused, "rotary", "rotary"),
                (cpu_fused, "silu_mul", "silu_mul"), (engine.runner, "logits", "forward"),
                (engine.runner, "prepare", "prepare"), (engine.scheduler, "schedule", "schedule"),
                (engine, "_sample_and_append", "sample")]
    return targets


def profile_decode(engine: LLMEngine, *, concurrency: int, prompt_tokens: int, steps: int,
                   seed: int = 0) -> DecodeProfile:
    """Time `steps` decode steps of `concurrency` sequences behind `prompt_tokens`-token random prompts."""
    if concurrency < 1 or prompt_tokens < 1 or steps < 1:
        raise ValueError("concurrency, prompt_tokens and steps must each be at least 1")
    if prompt_tokens + steps + 1 > engine.max_model_len:
        raise ValueError(f"prompt_tokens + steps ({prompt_tokens + steps}) exceed the model's "
                         f"{engine.max_model_len}-token limit; use shorter prompts or fewer steps")
    g = torch.Generator().manual_seed(seed)
    vocab = engine.runner.model.cfg.vocab_size
    params = SamplingParams(temperature=0.0, max_tokens=steps + 1, ignore_eos=True)
    for i in range(concurrency):
        engine.add_request(f"profile-{seed}-{i}", torch.randint(0, vocab, (prompt_tokens,), generator=g).tolist(),
                           params)
    while engine.scheduler.waiting or any(not s.output_token_ids for s in engine.scheduler.running):
        engine.step()  # prefill (and any chunks of it) until every sequence has its first token
    timers = _Timers()
    done = 0
    start = time.perf_counter()
    with _whole_steps(engine), _patched(_targets(engine), timers):
        while done < steps and engine.has_unfinished():
            engine.step()
            done += 1
    elapsed = time.perf_counter() - start
    while engine.has_unfinished():
        engine.step()
    return _summary(timers, concurrency=concurrency, prompt_tokens=prompt_tokens, steps=done, elapsed=elapsed)


def _summary(timers: _Timers, *, concurrency: int, prompt_tokens: int, steps: int, elapsed: float) -> DecodeProfile:
    per_step = {part: 1e3 * s / steps for part, s in timers.seconds.items()}
    inside = sum(per_step.get(part, 0.0) for part in KERNEL_PARTS)
    per_step["python + other"] = max(0.0, per_step.get("forward", 0.0) - inside)
    outside = sum(per_step.get(part, 0.0) for part in ("forward", "schedule", "prepare", "sample"))
    per_step["step, outside these"] = max(0.0, 1e3 * elapsed / steps - outside)
    ordered = dict(sorted(((p, round(v, 3)) for p, v in per_step.items()), key=lambda kv: -kv[1]))
    return DecodeProfile(concurrency=concurrency, prompt_tokens=prompt_tokens, steps=steps,
                         ms_per_step=round(1e3 * elapsed / steps, 3), parts_ms=ordered,
                         calls_per_step={p: n // steps for p, n in timers.calls.items()})


@dataclass(frozen=True)
class WorkloadProfile:
    """Where a whole serving-benchmark level's time goes, split by step kind: "prefill" steps (any prompt
    tokens, with the decodes that ride along) and "decode" steps (one token per running sequence)."""

    concurrency: int
    num_requests: int
    wall_s: float
    tok_per_s: float
    steps: dict[str, int]
    """Engine steps of each kind."""
    seconds: dict[str, float]
    """Wall seconds in the engine steps of each kind."""
    parts_s: dict[str, dict[str, float]]
    """{kind: {part: seconds}}: the parts of `DecodeProfile.parts_ms` ("python + other" included), summed over
    the steps of that kind."""


def profile_workload(engine: LLMEngine, requests: list[BenchRequest], *, concurrency: int) -> WorkloadProfile:
    """Run `requests` closed loop at `concurrency` as `ragsvc bench serving` does,
    timing each part of every step and filing it under the step's kind."""
    timers = _Timers()
    parts: dict[str, dict[str, float]] = {"prefill": defaultdict(float), "decode": defaultdict(float)}
    steps = {"prefill": 0, "decode": 0}
    seconds = {"prefill": 0.0, "decode": 0.0}
    step = engine.step

    def timed_step() -> Any:
        s = engine.scheduler
        kind = "prefill" if s.waiting or any(len(q) - q.num_computed_tokens > 1 for q in s.running) else "decode"
        timers.seconds = parts[kind]
        start = time.perf_counter()
        try:
            return step()
        finally:
            seconds[kind] += time.perf_counter() - start
            steps[kind] += 1

    engine.step = timed_step  # type: ignore[method-assign]
    start = time.perf_counter()
    try:
        with _whole_steps(engine), _patched(_targets(engine), timers):
            timings = run_ragsvc(engine, requests, concurrency=concurrency)
    finally:
        del engine.step
    wall = time.perf_counter() - start
    tokens = sum(t.num_output_tokens for t in timings)
    for d in parts.values():
        d["python + other"] = max(0.0, d.get("forward", 0.0) - sum(d.get(x, 0.0) for x in KERNEL_PARTS))
    return WorkloadProfile(
        concurrency=concurrency, num_requests=len(requests), wall_s=round(wall, 3), tok_per_s=round(tokens / wall, 2),
        steps=steps, seconds={k: round(v, 6) for k, v in seconds.items()},
        parts_s={k: dict(sorted(((p, round(v, 6)) for p, v in d.items()), key=lambda kv: -kv[1]))
                 for k, d in parts.items()})
