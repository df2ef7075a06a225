"""The Generator protocol: the one way every part of ragsvc calls a language model.

FLARE needs the probability of each generated token, rerankers need the logprob of a label, agents need plain
text; all of them get a `Generation` (text, per-token logprobs with top alternatives, finish reason, usage).
Implementations: `InProcessGenerator` (our engine, same process), `OpenAIGenerator` (any OpenAI-compatible
server over HTTP: ours, vLLM, llama.cpp), `ScriptedGenerator` (fixed replies, for tests of decision logic
where a 135M model cannot be relied on to decide).

`generate_many` sends many prompts with the same options at once and returns when all are done: a reranker
judging twenty passages, or an evaluation run, needs the batch served together (one engine step, or one
round of concurrent HTTP requests that the server batches) rather than twenty prompts queued one by one.

A prompt is either a plain string (sent as a completion, no chat template) or a list of chat messages
(`{"role": ..., "content": ...}`, rendered with the model's chat template). A list that ends with an
assistant message is continued rather than answered (see ragsvc/llm/chat.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol, TypeVar, runtime_checkable

from ragsvc.errors import InvalidInput

Message = Mapping[str, str]
Prompt = str | Sequence[Message]


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One generated token: its text, natural-log probability under the model, and the top alternatives
    (token text, logprob), most likely first. `token_id` is known in-process only (HTTP APIs send text)."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()
    token_id: int | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    """Prompt tokens served from the server's prefix cache (0 when the server does not say)."""


@dataclass(frozen=True, slots=True)
class Generation:
    text: str
    tokens: tuple[TokenLogprob, ...]
    """One entry per generated token when logprobs were asked for; empty otherwise."""
    finish_reason: str
    """"stop" (EOS or a stop string), "length" (max_tokens), or "abort"."""
    usage: Usage
    server: str | None = None
    """Base URL of the server that wrote it (HTTP clients and the pool); None in process."""


@dataclass(frozen=True, slots=True)
class GenerationChunk:
    """A piece of a streamed generation: the new text and the logprobs of the tokens new in it."""

    text: str
    tokens: tuple[TokenLogprob, ...] = ()
    finish_reason: str | None = None
    usage: Usage | None = None
    """Set on the last chunk; an in-process engine sets it on every chunk, as the counts so far. A caller that
    leaves an HTTP stream early gets none (see `streamed_usage`)."""
    server: str | None = None
    """Base URL of the server streaming it (HTTP clients and the pool); None in process."""


@dataclass(frozen=True, slots=True)
class GenerateOptions:
    """Per-call options shared by every Generator. Defaults are greedy and short: most callers in ragsvc
    (FLARE, scoring, reflection) want reproducible answers."""

    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    logprobs: bool = False
    top_logprobs: int = 0
    seed: int | None = None
    extra: Mapping[str, object] = field(default_factory=dict)
    """Server-specific fields passed through (OpenAIGenerator only), e.g. {"top_k": 40}."""

    def __post_init__(self) -> None:
        if self.max_tokens <= 0:
            raise InvalidInput(f"max_tokens must be at least 1, got {self.max_tokens}")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise InvalidInput(f"temperature must be a finite number >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise InvalidInput(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0 <= self.top_logprobs <= 20:
            raise InvalidInput(f"top_logprobs must be in [0, 20], got {self.top_logprobs}")
        if self.seed is not None and not -(1 << 63) <= self.seed < 1 << 63:
            raise InvalidInput(f"seed must be in [-2**63, 2**63 - 1], got {self.seed}")


def options(
    *, max_tokens: int = 256, temperature: float = 0.0, top_p: float = 1.0, stop: Sequence[str] | str = (),
    logprobs: bool = False, top_logprobs: int = 0, seed: int | None = None,
    extra: Mapping[str, object] | None = None,
) -> GenerateOptions:
    """GenerateOptions from the keyword arguments every `generate` / `stream` takes."""
    stops = (stop,) if isinstance(stop, str) else tuple(stop)
    return GenerateOptions(
        max_tokens=max_tokens, temperature=temperature, top_p=top_p, stop=stops,
        logprobs=logprobs or top_logprobs > 0, top_logprobs=top_logprobs, seed=seed, extra=dict(extra or {}),
    )


def check_messages(prompt: Prompt) -> list[dict[str, str]] | None:
    """The prompt as a list of message dicts, or None for a plain-string prompt; refuses malformed messages."""
    if isinstance(prompt, str):
        return None
    messages = [dict(m) for m in prompt]
    if not messages:
        raise InvalidInput("messages is empty; send at least one {'role', 'content'} message")
    for i, m in enumerate(messages):
        if "role" not in m or "content" not in m:
            raise InvalidInput(f"message {i} needs 'role' and 'content' keys, got {sorted(m)}")
    return messages


@runtime_checkable
class Generator(Protocol):
    """Text (and token logprobs) from a prompt. All options are keyword-only; see `options()` for defaults."""

    @property
    def model(self) -> str:
        """The served model's name."""
        ...

    def generate(
        self, prompt: Prompt, *, max_tokens: int = 256, temperature: float = 0.0, top_p: float = 1.0,
        stop: Sequence[str] | str = (), logprobs: bool = False, top_logprobs: int = 0, seed: int | None = None,
    ) -> Generation: ...

    def stream(
        self, prompt: Prompt, *, max_tokens: int = 256, temperature: float = 0.0, top_p: float = 1.0,
        stop: Sequence[str] | str = (), logprobs: bool = False, top_logprobs: int = 0, seed: int | None = None,
    ) -> Iterator[GenerationChunk]: ...

    def generate_many(
        self, prompts: Sequence[Prompt], *, max_tokens: int = 256, temperature: float = 0.0, top_p: float = 1.0,
        stop: Sequence[str] | str = (), logprobs: bool = False, top_logprobs: int = 0, seed: int | None = None,
    ) -> list[Generation]:
        """One Generation per prompt, in prompt order, all with the same options. Every prompt is submitted
        before any is waited on, so a batching server serves them together; a bad option or prompt raises
        before anything is sent."""
        ...


_Item = TypeVar("_Item")
_Result = TypeVar("_Result")


def map_in_threads(fn: Callable[[_Item], _Result], items: Sequence[_Item], *, max_workers: int,
                   name: str) -> list[_Result]:
    """`fn` over `items` on at most `max_workers` threads, results in item order. The first failure is raised
    and the calls not yet started are cancelled. Blocking threads, so it can be called from any thread,
    including one that runs an event loop."""
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=min(max_workers, len(items)), thread_name_prefix=name) as pool:
        futures = [pool.submit(fn, item) for item in items]
        try:
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            raise


def streamed_usage(usage: Usage | None, *, tokens: int, pieces: int) -> Usage:
    """The usage a stream reported, or, for one left before its last chunk over HTTP, the completion tokens
    counted from what arrived: the tokens when logprobs came with them, else the pieces of text (a server
    streams one token a piece, several only when speculative decoding accepts a run). The prompt is then
    unknown: 0."""
    return usage or Usage(prompt_tokens=0, completion_tokens=max(tokens, pieces))
