"""Run the choices of one OpenAI request on the async engine and shape the results: whole responses, or
server-sent events (`data: {chunk}` lines, then `data: [DONE]`).

Several choices (n > 1, or several prompts) run concurrently and their chunks interleave as they come, each
tagged with its choice index, as OpenAI's stream does. Each engine stream is closed with `aclosing`, so a
cancelled response (client gone) aborts every request it started.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from ragsvc.api import openai_convert as conv
from ragsvc.api.openai_schemas import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionResponse,
    CompletionChoice,
    CompletionResponse,
    DeltaMessage,
    ErrorBody,
    PromptTokensDetails,
    Usage,
)
from ragsvc.api.request_id import current_request_id
from ragsvc.errors import RagsvcError
from ragsvc.serving.async_engine import AsyncLLMEngine
from ragsvc.serving.outputs import RequestOutput, TokenLogprob
from ragsvc.serving.sampling_params import SamplingParams

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChoiceJob:
    """One engine request: choice `index` of the response, for prompt `prompt_index`."""

    index: int
    prompt_index: int
    request_id: str
    token_ids: list[int]
    params: SamplingParams


@dataclass
class Collected:
    """A choice's final output and every token logprob it produced (outputs carry only their new ones)."""

    job: ChoiceJob
    last: RequestOutput | None = None
    logprobs: list[TokenLogprob] = field(default_factory=list)

    def add(self, out: RequestOutput) -> None:
        self.last = out
        self.logprobs.extend(out.logprobs)


def usage(finals: dict[int, RequestOutput]) -> Usage:
    """Prompt tokens count once per prompt (not per choice), as OpenAI counts them."""
    prompts: dict[int, RequestOutput] = {}
    for key, out in finals.items():
        prompts.setdefault(key >> 16, out)
    prompt_tokens = sum(len(o.prompt_token_ids) for o in prompts.values())
    cached = sum(o.num_cached_tokens for o in prompts.values())
    completion_tokens = sum(len(o.output_token_ids) for o in finals.values())
    return Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=cached),
    )


def _key(job: ChoiceJob) -> int:
    # prompt index in the high bits so usage() can count each prompt once
    return (job.prompt_index << 16) | job.index


def _finals(collected: list[Collected]) -> dict[int, RequestOutput]:
    return {_key(c.job): c.last for c in collected if c.last is not None}


def completion_response(
    collected: list[Collected], *, request_id: str, model: str, logprobs: int | None
) -> CompletionResponse:
    choices = [
        CompletionChoice(
            index=c.job.index,
            text=c.last.text if c.last else "",
            logprobs=conv.completion_logprobs(c.logprobs, text_offset=0) if logprobs is not None else None,
            finish_reason=c.last.finish_reason if c.last else None,
        )
        for c in collected
    ]
    return CompletionResponse(
        id=request_id, created=conv.now_s(), model=model, choices=choices, usage=usage(_finals(collected))
    )


def chat_response(
    collected: list[Collected], *, request_id: str, model: str, logprobs: bool
) -> ChatCompletionResponse:
    choices = [
        ChatChoice(
            index=c.job.index,
            message=AssistantMessage(content=c.last.text if c.last else ""),
            logprobs=conv.chat_logprobs(c.logprobs) if logprobs else None,
            finish_reason=c.last.finish_reason if c.last else None,
        )
        for c in collected
    ]
    return ChatCompletionResponse(
        id=request_id, created=conv.now_s(), model=model, choices=choices, usage=usage(_finals(collected))
    )


async def merged(
    engine: AsyncLLMEngine, jobs: list[ChoiceJob]
) -> AsyncGenerator[tuple[ChoiceJob, RequestOutput], None]:
    """Outputs of all jobs in arrival order. Cancelling the consumer cancels (and so aborts) every job."""
    if len(jobs) == 1:  # the common case: no helper task, the engine's stream is iterated right here
        job = jobs[0]
        async with aclosing(engine.generate(job.request_id, job.token_ids, job.params)) as stream:
            async for out in stream:
                yield job, out
        return
    queue: asyncio.Queue[tuple[ChoiceJob, RequestOutput | BaseException | None]] = asyncio.Queue()

    async def pump(job: ChoiceJob) -> None:
        try:
            async with aclosing(engine.generate(job.request_id, job.token_ids, job.params)) as stream:
                async for out in stream:
                    queue.put_nowait((job, out))
            queue.put_nowait((job, None))
        except Exception as err:  # handed to the consumer, which re-raises it
            queue.put_nowait((job, err))

    tasks = [asyncio.create_task(pump(job)) for job in jobs]
    try:
        remaining = len(tasks)
        while remaining:
            job, item = await queue.get()
            if isinstance(item, BaseException):
                raise item
            if item is None:
                remaining -= 1
                continue
            yield job, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _chunk_line(obj: Any) -> str:
    return f"data: {obj.model_dump_json()}\n\n"


def _completion_chunk(job: ChoiceJob, out: RequestOutput, *, request_id: str, model: str, offset: int) -> str:
    lp = conv.completion_logprobs(out.logprobs, text_offset=offset) if job.params.logprobs is not None else None
    choice = CompletionChoice(index=job.index, text=out.new_text, logprobs=lp, finish_reason=out.finish_reason)
    return _chunk_line(CompletionResponse(id=request_id, created=conv.now_s(), model=model, choices=[choice]))


def _chat_chunk(job: ChoiceJob, delta: DeltaMessage, out: RequestOutput | None, *, request_id: str, model: str) -> str:
    lp = conv.chat_logprobs(out.logprobs) if out is not None and job.params.logprobs is not None else None
    choice = ChatChunkChoice(
        index=job.index, delta=delta, logprobs=lp, finish_reason=out.finish_reason if out else None
    )
    return _chunk_line(ChatCompletionChunk(id=request_id, created=conv.now_s(), model=model, choices=[choice]))


def _error_line(err: Exception) -> str:
    """The in-band error event of a stream whose 200 is out: OpenAI's shape, plus `request_id` when it is the
    server's fault (as in a 500 body; the log line has the same id)."""
    rid = current_request_id.get()
    if isinstance(err, RagsvcError) and err.status_code < 500:
        payload: dict[str, object] = {"error": ErrorBody(message=err.message, type="invalid_request_error",
                                                         code=err.code).model_dump()}
    else:
        logger.error("request %s: stream failed", rid, exc_info=err)
        message = err.message if isinstance(err, RagsvcError) else "internal server error"
        body = ErrorBody(message=f"{message}; the server log has it under request id {rid}", type="server_error",
                         code=err.code if isinstance(err, RagsvcError) else "internal_error")
        payload = {"error": body.model_dump(), "request_id": rid}
    return f"data: {json.dumps(payload)}\n\n"


async def stream_events(
    engine: AsyncLLMEngine, jobs: list[ChoiceJob], *, kind: str, request_id: str, model: str, include_usage: bool
) -> AsyncIterator[str]:
    """SSE lines for a chat ("chat") or completion ("completion") stream, ending with `data: [DONE]`."""
    finals: dict[int, RequestOutput] = {}
    offsets = {job.index: 0 for job in jobs}
    if kind == "chat":
        for job in jobs:
            yield _chat_chunk(job, DeltaMessage(role="assistant", content=""), None, request_id=request_id, model=model)
    try:
        async with aclosing(merged(engine, jobs)) as outputs:
            async for job, out in outputs:
                if out.finished:
                    finals[_key(job)] = out
                if not (out.new_text or out.logprobs or out.finished):
                    continue  # the engine is holding text back (possible stop string, partial UTF-8)
                if kind == "chat":
                    delta = DeltaMessage(content=out.new_text)
                    yield _chat_chunk(job, delta, out, request_id=request_id, model=model)
                else:
                    yield _completion_chunk(job, out, request_id=request_id, model=model, offset=offsets[job.index])
                    offsets[job.index] += sum(len(t.token) for t in out.logprobs)
    except Exception as err:  # headers are sent already: the error travels as an event
        yield _error_line(err)
        return
    if include_usage:
        cls = ChatCompletionChunk if kind == "chat" else CompletionResponse
        yield _chunk_line(cls(id=request_id, created=conv.now_s(), model=model, choices=[], usage=usage(finals)))
    yield "data: [DONE]\n\n"
