"""PooledGenerator: one Generator over several OpenAI-compatible servers (ours, vLLM), for capacity and failover.

Each call goes to the least-loaded healthy server (fewest requests in flight from this process; ties go to
the one that has served fewest), so a batch from `generate_many` spreads over the pool and each server
batches its share. A server that cannot be reached, refuses with 503, fails with a 5xx or drops the
connection is marked down for `cooldown_s` and the call is retried on another; after the cooldown it is
tried again, and at once if every healthy server has already failed that call. Not retried: a read timeout
(the request may still be running there and would run twice), 4xx answers (the request itself is wrong),
and a refused key or model name (UpstreamRefused: every server was given the same settings, and the pool's
"no server answered" would hide which one to fix).
A stream fails over only before its first chunk; after that the client has text from one server, and a
break surfaces as UpstreamError. Every Generation and chunk names the server that wrote it (`server`), and
`stats()` shows each server's load and health.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from ragsvc.errors import InvalidInput, NotReady, UpstreamError, UpstreamRefused, UpstreamTimeout
from ragsvc.llm.generator import (
    Generation,
    GenerationChunk,
    Generator,
    Prompt,
    check_messages,
    map_in_threads,
    options,
)
from ragsvc.llm.openai_client import OpenAIGenerator

T = TypeVar("T")
MAX_SERVERS = 64


@dataclass(frozen=True, slots=True)
class ServerStats:
    url: str
    healthy: bool
    in_flight: int
    served: int
    failures: int


@dataclass(slots=True)
class _Member:
    client: OpenAIGenerator
    in_flight: int = 0
    served: int = 0
    failures: int = 0
    down_until: float = 0.0


def parse_urls(text: str) -> list[str]:
    """Base URLs from a comma-separated setting (RAGSVC_GENERATOR__URL), each http(s)://, none repeated."""
    urls = [u.strip().rstrip("/") for u in text.split(",") if u.strip()]
    if not urls or len(urls) > MAX_SERVERS:
        raise InvalidInput(f"give between 1 and {MAX_SERVERS} model server URLs separated by commas, got "
                           f"{len(urls)}", detail={"param": "generator.url"})
    bad = [u for u in urls if not u.startswith(("http://", "https://"))]
    if bad or len(set(urls)) != len(urls):
        raise InvalidInput(f"model server URLs must be distinct http(s):// base URLs including /v1, e.g. "
                           f"http://127.0.0.1:8001/v1; got {', '.join(bad) or 'a repeated URL'}",
                           detail={"param": "generator.url"})
    return urls


def generator_for(url_text: str, **kwargs: Any) -> Generator:
    """One OpenAIGenerator for one URL, a PooledGenerator for several (keyword options go to each client)."""
    urls = parse_urls(url_text)
    if len(urls) == 1:
        return OpenAIGenerator(urls[0], **kwargs)
    return PooledGenerator(urls, **kwargs)


class PooledGenerator:
    def __init__(self, base_urls: Sequence[str], *, model: str | None = None, api_key: str | None = None,
                 timeout_s: float = 120.0, connect_timeout_s: float = 2.0, cooldown_s: float = 5.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        if not base_urls:
            raise InvalidInput("a model server pool needs at least one base URL")
        # no per-client connection retries: another server is the retry, and a dead one must fail fast
        self._members = [_Member(OpenAIGenerator(url, model=model, api_key=api_key, timeout_s=timeout_s,
                                                 connect_timeout_s=connect_timeout_s, max_retries=0,
                                                 transport=transport)) for url in base_urls]
        self._cooldown_s = cooldown_s
        self._lock = threading.Lock()

    @property
    def model(self) -> str:
        return self._call(lambda client: client.model)

    def close(self) -> None:
        for member in self._members:
            member.client.close()

    def __enter__(self) -> PooledGenerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> list[ServerStats]:
        now = time.monotonic()
        with self._lock:
            return [ServerStats(m.client.base_url, m.down_until <= now, m.in_flight, m.served, m.failures)
                    for m in self._members]

    # -- the Generator protocol ------------------------------------------------------------------------

    def generate(self, prompt: Prompt, **kwargs: Any) -> Generation:
        options(**kwargs)  # bad options raise here, before any server is tried
        return self._call(lambda client: client.generate(prompt, **kwargs))

    def generate_many(self, prompts: Sequence[Prompt], *, max_concurrency: int = 32, **kwargs: Any) -> list[Generation]:
        """Each prompt routed on its own (so the batch spreads over the pool), at most `max_concurrency` at once;
        results in prompt order; everything is checked before anything is sent."""
        if max_concurrency < 1:
            raise InvalidInput(f"max_concurrency must be at least 1, got {max_concurrency}")
        options(**kwargs)
        for prompt in prompts:
            check_messages(prompt)
        return map_in_threads(lambda p: self.generate(p, **kwargs), prompts, max_workers=max_concurrency,
                              name="ragsvc-pool")

    def stream(self, prompt: Prompt, **kwargs: Any) -> Iterator[GenerationChunk]:
        options(**kwargs)
        tried: set[int] = set()
        while True:
            pick = self._acquire(tried)
            chunks = self._members[pick].client.stream(prompt, **kwargs)
            try:
                first = next(chunks, None)
            except (NotReady, UpstreamError) as exc:
                self._failed(pick, tried, exc)
                continue
            except BaseException:
                self._release(pick, ok=False)
                raise
            break
        ok = False
        try:
            if first is not None:
                yield first
                yield from chunks
            ok = True
        finally:
            close = getattr(chunks, "close", None)  # a generator: closing it closes the connection
            if close is not None:
                close()
            self._release(pick, ok=ok)

    # -- routing ---------------------------------------------------------------------------------------

    def _call(self, fn: Callable[[OpenAIGenerator], T]) -> T:
        tried: set[int] = set()
        while True:
            pick = self._acquire(tried)
            try:
                result = fn(self._members[pick].client)
            except (NotReady, UpstreamError) as exc:
                self._failed(pick, tried, exc)
                continue
            except BaseException:
                self._release(pick, ok=False)
                raise
            self._release(pick, ok=True)
            return result

    def _acquire(self, tried: set[int]) -> int:
        """The untried server to use: healthy ones by (in flight, served); then ones cooling down."""
        now = time.monotonic()
        with self._lock:
            untried = [i for i in range(len(self._members)) if i not in tried]
            if not untried:
                urls = ", ".join(m.client.base_url for m in self._members)
                raise UpstreamError(f"no model server in the pool answered ({urls}); start them (`ragsvc "
                                    "serve-model`) or fix RAGSVC_GENERATOR__URL")
            members = self._members
            pick = min(untried, key=lambda i: (members[i].down_until > now, members[i].in_flight,
                                               members[i].served, i))
            members[pick].in_flight += 1
            return pick

    def _failed(self, pick: int, tried: set[int], exc: Exception) -> None:
        """Mark a server down after a failure worth retrying elsewhere; re-raise the ones that are not."""
        final = isinstance(exc, (UpstreamTimeout, UpstreamRefused))  # see the module docstring
        self._release(pick, ok=False, down=not final)
        if final:
            raise exc
        tried.add(pick)

    def _release(self, pick: int, *, ok: bool, down: bool = False) -> None:
        with self._lock:
            member = self._members[pick]
            member.in_flight -= 1
            if ok:
                member.served += 1
                member.down_until = 0.0
            if down:
                member.failures += 1
                member.down_until = time.monotonic() + self._cooldown_s
