"""InProcessGenerator: the Generator over our own engine in this process, no HTTP in between.

All calls go through one AsyncLLMEngine, whose step thread batches every request in flight; so calls from
several threads (a thread pool of agents, `generate_many`) share forward passes instead of queueing behind
each other. Two ways to get one:

- `InProcessGenerator(engine)` / `.from_config(config)`: owns a private event loop thread and the async
  engine on it (scripts, evals, tests); `close()` stops both.
- `InProcessGenerator.attach(async_engine, loop, tokenizer=...)`: rides an engine already running on `loop`
  (the API server's), for sync callers in worker threads; async callers on that loop use `agenerate`.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import threading
from collections.abc import AsyncGenerator, Iterator, Sequence
from contextlib import aclosing
from typing import Any

from ragsvc.errors import InvalidInput
from ragsvc.llm.chat import render_chat
from ragsvc.llm.generator import (
    GenerateOptions,
    Generation,
    GenerationChunk,
    Prompt,
    TokenLogprob,
    Usage,
    check_messages,
    options,
)
from ragsvc.serving.async_engine import AsyncLLMEngine
from ragsvc.serving.config import EngineConfig
from ragsvc.serving.engine import LLMEngine
from ragsvc.serving.outputs import RequestOutput
from ragsvc.serving.outputs import TokenLogprob as EngineTokenLogprob
from ragsvc.serving.sampling_params import SamplingParams

_ids = itertools.count()


def _token(t: EngineTokenLogprob) -> TokenLogprob:
    return TokenLogprob(token=t.token, logprob=t.logprob, top=tuple((s, lp) for _, s, lp in t.top), token_id=t.token_id)


def _usage(out: RequestOutput) -> Usage:
    return Usage(prompt_tokens=len(out.prompt_token_ids), completion_tokens=len(out.output_token_ids),
                 cached_tokens=out.num_cached_tokens)


class InProcessGenerator:
    """Generator over an in-process AsyncLLMEngine (see the module docstring for the two ways to build one)."""

    def __init__(self, engine: LLMEngine) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="ragsvc-generator-loop", daemon=True)
        self._thread.start()
        self._async = AsyncLLMEngine(engine)
        self._owns_loop = True
        self._setup(engine.model_name, engine.tokenizer, engine.max_model_len)
        asyncio.run_coroutine_threadsafe(self._async.start(), self._loop).result()

    @classmethod
    def from_config(cls, config: EngineConfig | None = None) -> InProcessGenerator:
        return cls(LLMEngine.from_config(config or EngineConfig()))

    @classmethod
    def attach(
        cls, async_engine: AsyncLLMEngine, loop: asyncio.AbstractEventLoop, *, engine: LLMEngine
    ) -> InProcessGenerator:
        """Use an async engine already running on `loop`; `engine` is the LLMEngine it wraps (for the
        tokenizer and limits). Closing this generator leaves the engine running."""
        self = cls.__new__(cls)
        self._loop, self._async, self._owns_loop = loop, async_engine, False
        self._setup(engine.model_name, engine.tokenizer, engine.max_model_len)
        return self

    def _setup(self, model: str, tokenizer: Any, max_model_len: int) -> None:
        self.model = model
        self.max_model_len = max_model_len
        # a private copy, used under a lock: HF fast tokenizers are not safe to share across threads, and the
        # engine's step thread detokenises with its own
        self._tokenizer = copy.deepcopy(tokenizer)
        self._tok_lock = threading.Lock()

    def close(self) -> None:
        if self._owns_loop and self._loop.is_running():
            asyncio.run_coroutine_threadsafe(self._async.stop(), self._loop).result()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)

    def __enter__(self) -> InProcessGenerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- preparing a request ----------------------------------------------------------------------------

    def _token_ids(self, prompt: Prompt) -> list[int]:
        messages = check_messages(prompt)
        with self._tok_lock:
            if messages is None:
                return list(self._tokenizer(prompt)["input_ids"])
            text = render_chat(self._tokenizer, messages)
            return list(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def _prepare(self, prompt: Prompt, opts: GenerateOptions) -> tuple[str, list[int], SamplingParams]:
        ids = self._token_ids(prompt)
        if not ids:
            raise InvalidInput("the prompt is empty; send at least one token")
        if len(ids) + opts.max_tokens > self.max_model_len:
            raise InvalidInput(
                f"the prompt has {len(ids)} tokens and max_tokens is {opts.max_tokens}: more than the model's "
                f"context of {self.max_model_len} tokens (max_model_len); shorten the prompt or lower max_tokens"
            )
        params = SamplingParams(
            temperature=opts.temperature, top_p=opts.top_p, max_tokens=opts.max_tokens, stop=opts.stop,
            seed=opts.seed, logprobs=opts.top_logprobs if opts.logprobs else None,
        )
        return f"gen-{next(_ids)}", ids, params

    # --- async API (callers on the engine's loop) --------------------------------------------------------

    async def _collect(self, request_id: str, ids: list[int], params: SamplingParams) -> Generation:
        tokens: list[TokenLogprob] = []
        last: RequestOutput | None = None
        async with aclosing(self._async.generate(request_id, ids, params)) as stream:
            async for out in stream:
                tokens.extend(_token(t) for t in out.logprobs)
                last = out
        if last is None:
            raise RuntimeError(f"engine produced no output for {request_id}")
        return Generation(text=last.text, tokens=tuple(tokens), finish_reason=last.finish_reason or "stop",
                          usage=_usage(last))

    async def agenerate(self, prompt: Prompt, **kwargs: Any) -> Generation:
        """`generate` for coroutines running on the engine's own event loop."""
        return await self._collect(*self._prepare(prompt, options(**kwargs)))

    async def astream(self, prompt: Prompt, **kwargs: Any) -> AsyncGenerator[GenerationChunk, None]:
        request_id, ids, params = self._prepare(prompt, options(**kwargs))
        async with aclosing(self._async.generate(request_id, ids, params)) as stream:
            async for out in stream:
                if out.new_text or out.logprobs or out.finished:
                    # the counts so far ride on every chunk, so a caller that leaves early still knows them
                    yield GenerationChunk(text=out.new_text, tokens=tuple(_token(t) for t in out.logprobs),
                                          finish_reason=out.finish_reason if out.finished else None,
                                          usage=_usage(out))

    # --- sync API (the Generator protocol; any thread but the engine loop's) -----------------------------

    def _check_thread(self) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            return
        if running is self._loop:
            raise RuntimeError("sync generate() called on the engine's event loop would deadlock; "
                               "await agenerate()/astream() there, or call from a worker thread")

    def generate(self, prompt: Prompt, **kwargs: Any) -> Generation:
        """See Generator.generate; keyword options as in `ragsvc.llm.generator.options`."""
        self._check_thread()
        job = self._prepare(prompt, options(**kwargs))
        future = asyncio.run_coroutine_threadsafe(self._collect(*job), self._loop)
        try:
            return future.result()
        finally:
            future.cancel()  # no-op when done; aborts the request if this thread was interrupted

    def generate_many(self, prompts: Sequence[Prompt], **kwargs: Any) -> list[Generation]:
        """See Generator.generate_many: all prompts tokenised and checked first (one too long raises before any
        runs), then added to the engine in one event-loop turn, so the step thread schedules them together
        (continuous batching: their prefills share steps, then their decodes). Results in prompt order; if one
        request fails, the others are aborted and their KV blocks freed."""
        self._check_thread()
        opts = options(**kwargs)
        jobs = [self._prepare(p, opts) for p in prompts]
        if not jobs:
            return []

        async def run_all() -> list[Generation]:
            # the tasks start in order in the next loop turn, each running up to its first await, which comes
            # after its synchronous engine.add_request; a TaskGroup (not gather) cancels the rest on a failure
            try:
                async with asyncio.TaskGroup() as group:
                    tasks = [group.create_task(self._collect(*job)) for job in jobs]
            except BaseExceptionGroup as failed:
                raise failed.exceptions[0] from None
            return [task.result() for task in tasks]

        future = asyncio.run_coroutine_threadsafe(run_all(), self._loop)
        try:
            return future.result()
        finally:
            future.cancel()

    def stream(self, prompt: Prompt, **kwargs: Any) -> Iterator[GenerationChunk]:
        """See Generator.stream. Leaving the loop early aborts the request and frees its KV blocks."""
        self._check_thread()
        chunks = self.astream(prompt, **kwargs)

        async def next_chunk() -> GenerationChunk:
            return await anext(chunks)

        try:
            while True:
                try:
                    yield asyncio.run_coroutine_threadsafe(next_chunk(), self._loop).result()
                except StopAsyncIteration:
                    return
        finally:
            asyncio.run_coroutine_threadsafe(chunks.aclose(), self._loop).result(timeout=30)
