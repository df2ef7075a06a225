"""How a simulation tick reaches the model: one `generate_many` per phase for every agent's calls of that
phase (a batching engine serves them as one batch), or one call at a time (`sequential`, the benchmark's peer),
under a per-agent budget of calls and completion tokens, with the usage counted for the tick's trace.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ragsvc.llm.generator import Generation, GenerationChunk, Generator, Prompt


@dataclass(slots=True)
class TickUsage:
    """What one tick asked of the model (the trace's numbers)."""

    calls: int = 0
    batches: int = 0
    """generate_many calls (phases that had work); sequential runs count one per call."""
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    model_ms: float = 0.0
    by_phase: dict[str, int] = field(default_factory=dict)

    def add(self, phase: str, generations: Sequence[Generation], *, batches: int, elapsed_ms: float) -> None:
        self.calls += len(generations)
        self.batches += batches
        self.by_phase[phase] = self.by_phase.get(phase, 0) + len(generations)
        self.model_ms += elapsed_ms
        for g in generations:
            self.prompt_tokens += g.usage.prompt_tokens
            self.cached_tokens += g.usage.cached_tokens
            self.completion_tokens += g.usage.completion_tokens


class PhaseCaller:
    """Sends each phase's requests together (or one by one), refusing requests over an agent's budget."""

    def __init__(self, generator: Generator, *, sequential: bool, max_calls_per_agent: int,
                 max_tokens_per_agent: int, seed: int) -> None:
        self.generator = generator
        self.sequential = sequential
        self.max_calls = max_calls_per_agent
        self.max_tokens = max_tokens_per_agent
        self.seed = seed
        self.usage = TickUsage()
        self._calls: dict[str, int] = {}
        self._tokens: dict[str, int] = {}

    def start_tick(self) -> None:
        self.usage = TickUsage()
        self._calls.clear()
        self._tokens.clear()

    def allows(self, agent: str, max_tokens: int) -> bool:
        return (self._calls.get(agent, 0) < self.max_calls
                and self._tokens.get(agent, 0) + max_tokens <= self.max_tokens)

    def call(self, phase: str, requests: Sequence[tuple[str, Prompt]], *, max_tokens: int,
             charged: bool = True) -> list[Generation | None]:
        """One reply per (agent, prompt), in order; None where the agent's budget is spent. `charged` False:
        not counted against the agents (importance ratings, shared by all)."""
        granted = [i for i, (agent, _) in enumerate(requests) if not charged or self.allows(agent, max_tokens)]
        if charged:
            for i in granted:
                agent = requests[i][0]
                self._calls[agent] = self._calls.get(agent, 0) + 1
                self._tokens[agent] = self._tokens.get(agent, 0) + max_tokens
        prompts = [requests[i][1] for i in granted]
        out: list[Generation | None] = [None] * len(requests)
        if not prompts:
            return out
        started = time.perf_counter()
        if self.sequential:
            replies = [self.generator.generate(p, max_tokens=max_tokens, seed=self.seed) for p in prompts]
        else:
            replies = self.generator.generate_many(prompts, max_tokens=max_tokens, seed=self.seed)
        self.usage.add(phase, replies, batches=len(prompts) if self.sequential else 1,
                       elapsed_ms=(time.perf_counter() - started) * 1000.0)
        for i, reply in zip(granted, replies, strict=True):
            out[i] = reply
        return out


class PhaseGenerator:
    """A Generator over a PhaseCaller's model for parts that call the model themselves (the importance scorer):
    their calls are counted in the tick's usage under `phase`, and sent one by one in a sequential run."""

    def __init__(self, caller: PhaseCaller, phase: str) -> None:
        self._caller, self._phase = caller, phase
        self.model = caller.generator.model

    def generate(self, prompt: Prompt, **kwargs: Any) -> Generation:
        return self.generate_many([prompt], **kwargs)[0]

    def generate_many(self, prompts: Sequence[Prompt], **kwargs: Any) -> list[Generation]:
        if not prompts:
            return []
        caller = self._caller
        started = time.perf_counter()
        if caller.sequential:
            replies = [caller.generator.generate(p, **kwargs) for p in prompts]
        else:
            replies = caller.generator.generate_many(prompts, **kwargs)
        caller.usage.add(self._phase, replies, batches=len(prompts) if caller.sequential else 1,
                         elapsed_ms=(time.perf_counter() - started) * 1000.0)
        return replies

    def stream(self, prompt: Prompt, **kwargs: Any) -> Iterator[GenerationChunk]:
        gen = self.generate(prompt, **kwargs)
        yield GenerationChunk(text=gen.text, tokens=gen.tokens, finish_reason=gen.finish_reason, usage=gen.usage)
