"""How a simulation tick reaches the model: one `generate_many` per phase for every agent's calls of that
phase (a batching engine serves them as one batch), or one call at a time (`sequential`, the benchmark's peer),
under a per-agent budget of calls and completion tokens, with the usage counted for the tick's trace.

Priming (`prime`, batched only). A prefix cache serves a prompt's opening blocks only once some request has
computed them, and requests admitted in the same engine step have not: five day plans sent together each
compute the town's shared preamble, and the first importance batch computes the scorer's instruction once per
prompt the step admits. One call one at a time computes it once and then reuses it. So before a batch of two or
more, its first prompt is sent alone for one token: its blocks (the preamble or instruction that all of them
share) are cached when the batch arrives, and the batch computes only what differs. The priming call's reply is
dropped; it is counted apart (`primes`, `prime_prompt_tokens`), and the tokens it computed count as computed,
not as cached, in the trace. A batch is primed only when the part of its shared prefix that no earlier prompt of
the run began with is long enough to matter (`PRIME_MIN_CHARS`, counted once per prompt after the first): after
the first batch of a run, the town preamble that agents' prompts share is cached already, and a priming call
would only add a forward pass that the batch then waits on.

Profile. Per phase the trace keeps the batch sizes, the prompt / cached / completion tokens, and the
`critical_ms`: for each batch the time of its longest call, measured call by call in a sequential run (the
batch's own time in a batched run). A sequential run's critical time is what its phases would take if a batch
cost no more than its longest call: the most any batching of the same calls can gain.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ragsvc.llm.generator import Generation, GenerationChunk, Generator, Prompt

SENT_KEPT = 512
PRIME_MIN_CHARS = 512
"""Uncached shared-prefix characters, times the prompts after the first, that make a priming call worth its
forward pass (about 128 tokens of prefill the batch would otherwise repeat)."""
"""Prompts remembered for the priming check: a prefix sent longer ago than this is primed again."""


@dataclass(slots=True)
class TickUsage:
    """What one tick asked of the model (the trace's numbers)."""

    calls: int = 0
    primes: int = 0
    """One-token priming calls before batches (not in `calls`)."""
    prime_prompt_tokens: int = 0
    """Prompt tokens the priming calls computed (their cached ones are left out of every count)."""
    batches: int = 0
    """generate_many calls (phases that had work); sequential runs count one per call."""
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    model_ms: float = 0.0
    by_phase: dict[str, int] = field(default_factory=dict)
    ms_by_phase: dict[str, float] = field(default_factory=dict)
    """Time waiting for the model, per phase (where a batched run's time goes)."""
    sizes_by_phase: dict[str, list[int]] = field(default_factory=dict)
    """The size of each batch a phase sent (a sequential run's phase call counts as one batch of its calls)."""
    tokens_by_phase: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per phase: prompt, cached and completion tokens."""
    critical_ms_by_phase: dict[str, float] = field(default_factory=dict)
    """Per phase: the sum over its batches of the longest call's time (see the module docstring)."""

    def add_prime(self, generation: Generation, *, elapsed_ms: float) -> None:
        """A priming call: its computed prompt tokens are model work the batch then finds cached."""
        self.primes += 1
        self.prime_prompt_tokens += generation.usage.prompt_tokens - generation.usage.cached_tokens
        self.model_ms += elapsed_ms

    def add(self, phase: str, generations: Sequence[Generation], *, batches: int, elapsed_ms: float,
            longest_ms: float | None = None) -> None:
        """One phase call's replies; `longest_ms` is its longest single call (default: the whole call)."""
        self.calls += len(generations)
        self.batches += batches
        self.by_phase[phase] = self.by_phase.get(phase, 0) + len(generations)
        self.model_ms += elapsed_ms
        self.ms_by_phase[phase] = self.ms_by_phase.get(phase, 0.0) + elapsed_ms
        self.sizes_by_phase.setdefault(phase, []).append(len(generations))
        critical = elapsed_ms if longest_ms is None else longest_ms
        self.critical_ms_by_phase[phase] = self.critical_ms_by_phase.get(phase, 0.0) + critical
        tokens = self.tokens_by_phase.setdefault(phase, {"prompt": 0, "cached": 0, "completion": 0})
        for g in generations:
            self.prompt_tokens += g.usage.prompt_tokens
            self.cached_tokens += g.usage.cached_tokens
            self.completion_tokens += g.usage.completion_tokens
            tokens["prompt"] += g.usage.prompt_tokens
            tokens["cached"] += g.usage.cached_tokens
            tokens["completion"] += g.usage.completion_tokens


class PhaseCaller:
    """Sends each phase's requests together (or one by one), refusing requests over an agent's budget."""

    def __init__(self, generator: Generator, *, sequential: bool, max_calls_per_agent: int,
                 max_tokens_per_agent: int, seed: int, prime: bool = False) -> None:
        self.generator = generator
        self.sequential = sequential
        self.prime = prime and not sequential
        self.max_calls = max_calls_per_agent
        self.max_tokens = max_tokens_per_agent
        self.seed = seed
        self.usage = TickUsage()
        self._calls: dict[str, int] = {}
        self._tokens: dict[str, int] = {}
        self._sent: deque[str] = deque(maxlen=SENT_KEPT)

    def start_tick(self) -> None:
        self.usage = TickUsage()
        self._calls.clear()
        self._tokens.clear()

    def allows(self, agent: str, max_tokens: int) -> bool:
        return (self._calls.get(agent, 0) < self.max_calls
                and self._tokens.get(agent, 0) + max_tokens <= self.max_tokens)

    def call(self, phase: str, requests: Sequence[tuple[str, Prompt]], *, max_tokens: int,
             charged: bool = True, stop: Sequence[str] = ()) -> list[Generation | None]:
        """One reply per (agent, prompt), in order; None where the agent's budget is spent. `charged` False:
        not counted against the agents (importance ratings, shared by all). `stop` ends each reply early."""
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
        replies = self.send(phase, prompts, {"max_tokens": max_tokens, "seed": self.seed, "stop": stop})
        for i, reply in zip(granted, replies, strict=True):
            out[i] = reply
        return out

    def send(self, phase: str, prompts: Sequence[Prompt], options: Mapping[str, Any]) -> list[Generation]:
        """`prompts` to the model with `options`, together or one at a time, primed and counted."""
        self.prime_for(prompts)
        started = time.perf_counter()
        longest: float | None = None
        if self.sequential:
            replies, longest = one_by_one(lambda p: self.generator.generate(p, **options), prompts)
        else:
            replies = self.generator.generate_many(prompts, **options)
        self._sent.extend(prompt_key(p) for p in prompts)
        self.usage.add(phase, replies, batches=len(prompts) if self.sequential else 1,
                       elapsed_ms=(time.perf_counter() - started) * 1000.0, longest_ms=longest)
        return replies

    def prime_for(self, prompts: Sequence[Prompt]) -> None:
        """The first prompt alone for one token before a batch of two or more whose shared prefix no earlier
        prompt began with (see the module docstring)."""
        if not self.prime or len(prompts) < 2:
            return
        shared = shared_prefix([prompt_key(p) for p in prompts])
        known = max((common_length(shared, key) for key in self._sent), default=0)
        if (len(prompts) - 1) * (len(shared) - known) < PRIME_MIN_CHARS:
            return
        started = time.perf_counter()
        primed = self.generator.generate(prompts[0], max_tokens=1, seed=self.seed)
        self._sent.append(prompt_key(prompts[0]))
        self.usage.add_prime(primed, elapsed_ms=(time.perf_counter() - started) * 1000.0)


def prompt_key(prompt: Prompt) -> str:
    """A prompt as one string whose prefixes are the prompt's prefixes (roles and contents in order)."""
    if isinstance(prompt, str):
        return prompt
    return "".join(f"\x00{m['role']}\x01{m['content']}" for m in prompt)


def shared_prefix(keys: Sequence[str]) -> str:
    """The longest string every key begins with."""
    first, last = min(keys), max(keys)  # the common prefix of the extremes is everyone's
    n = 0
    while n < min(len(first), len(last)) and first[n] == last[n]:
        n += 1
    return first[:n]


def common_length(a: str, b: str) -> int:
    """The length of the longest common prefix of `a` and `b` (binary search over C-level comparisons)."""
    low, high = 0, min(len(a), len(b))
    while low < high:
        mid = (low + high + 1) // 2
        if b.startswith(a[:mid]):
            low = mid
        else:
            high = mid - 1
    return low


def one_by_one(generate: Callable[[Prompt], Generation],
               prompts: Sequence[Prompt]) -> tuple[list[Generation], float]:
    """Each prompt in turn; the replies and the longest call's time in ms."""
    replies, longest = [], 0.0
    for prompt in prompts:
        started = time.perf_counter()
        replies.append(generate(prompt))
        longest = max(longest, (time.perf_counter() - started) * 1000.0)
    return replies, longest


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
        return self._caller.send(self._phase, prompts, kwargs)

    def stream(self, prompt: Prompt, **kwargs: Any) -> Iterator[GenerationChunk]:
        gen = self.generate(prompt, **kwargs)
        yield GenerationChunk(text=gen.text, tokens=gen.tokens, finish_reason=gen.finish_reason, usage=gen.usage)
