"""POST /v1/answer: a question over a collection -> an answer with citations, optionally with FLARE and SSE.

With `stream: true` the response is server-sent events, in the order they happen:
`retrieval` (a round's query and hits), `text` (answer text as it is accepted: with FLARE a sentence at a
time, without it as the model writes, so text the model looped into is streamed before the answer is cut),
`round` (a model call's token counts and time to first token), then `answer` (the same object the non-streaming
call returns, its text as kept) or
`error` ({error, detail}) if something failed after the stream began. The answerer runs in a worker thread;
a client that disconnects stops it at its next event, with or without `stream`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from ragsvc.answer.answerer import Answerer, AnswerEvent, AnswerOptions, check_answerable
from ragsvc.answer.composition import Composition
from ragsvc.answer.types import FlareOptions
from ragsvc.api.answer_schemas import (
    AnswerRequest,
    AnswerResponse,
    FlareBody,
    GenerationRoundPublic,
    HitPublic,
    RetrievalRoundPublic,
)
from ragsvc.api.auth import requires
from ragsvc.api.deps import StoreDep
from ragsvc.api.disconnect import CLIENT_CLOSED, unless_gone
from ragsvc.api.parsed_body import ParsedBodyRoute
from ragsvc.api.retrieval_options import retrieval_options
from ragsvc.api.sse import Emit, events_from_thread
from ragsvc.types import Hit

router = APIRouter(prefix="/v1", tags=["answer"], route_class=ParsedBodyRoute)


def composition(request: Request) -> Composition:
    return request.app.state.composition


def _answerer(body: AnswerRequest, request: Request, store: Any, on_event: Any = None
              ) -> tuple[Answerer, FlareOptions | None]:
    parts = composition(request)
    generator = parts.require_generator()
    pipeline = parts.pipeline(store)
    options = retrieval_options(body, body.k)
    pipeline.check(options)
    info = store.get_collection(body.collection)  # 404 before any model work
    check_answerable(body.collection, info.num_chunks)
    flare = _flare_options(body)

    def retrieve(query: str) -> tuple[list[Hit], dict[str, float]]:
        result = pipeline.retrieve(body.collection, query, options)
        return result.hits, result.timings_ms

    answerer = Answerer(generator, retrieve, on_event=on_event,
                        options=AnswerOptions(max_tokens=body.max_tokens, context_tokens=body.context_tokens,
                                              style=body.style))
    return answerer, flare


def _flare_options(body: AnswerRequest) -> FlareOptions | None:
    """FLARE's options; the request's max_tokens bounds all its calls unless the flare object sets its own."""
    if body.flare is True:
        return FlareOptions(max_tokens=body.max_tokens)
    if isinstance(body.flare, FlareBody):
        fields = body.flare.model_dump()
        if "max_tokens" not in body.flare.model_fields_set:
            fields["max_tokens"] = body.max_tokens
        return FlareOptions(**fields)
    return None


@router.post("/answer", response_model=AnswerResponse, openapi_extra=requires("read"),
             responses={200: {"content": {"text/event-stream": {}}, "description": "with stream: true"}})
async def answer(body: AnswerRequest, request: Request, store: StoreDep) -> Any:
    if not body.stream:
        gone = threading.Event()

        def stop_if_gone(event: AnswerEvent) -> None:
            if gone.is_set():
                raise _Disconnected

        answerer, flare = await asyncio.to_thread(_answerer, body, request, store, stop_if_gone)
        result = await unless_gone(request, asyncio.to_thread(answerer.answer, body.question, flare=flare), gone,
                                   _Disconnected)
        return Response(status_code=CLIENT_CLOSED) if result is None else AnswerResponse.of(result)
    # errors in the request itself are answered before the stream starts, as a plain 4xx
    await asyncio.to_thread(_answerer, body, request, store)
    return StreamingResponse(_events(body, request, store), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store"})


class _Disconnected(Exception):
    pass


async def _events(body: AnswerRequest, request: Request, store: Any) -> AsyncIterator[str]:
    def work(emit: Emit) -> tuple[str, Any]:
        answerer, flare = _answerer(body, request, store, lambda event: emit(event.kind, _event_data(event)))
        result = answerer.answer(body.question, flare=flare)
        return "answer", AnswerResponse.of(result).model_dump()

    async for line in events_from_thread(work, cancelled=_Disconnected):
        yield line


def _event_data(event: AnswerEvent) -> dict[str, Any]:
    if event.kind == "retrieval" and event.retrieval is not None:
        r = event.retrieval
        return RetrievalRoundPublic(round=r.round, reason=r.reason, query=r.query,
                                    hits=[HitPublic.of(h) for h in r.hits], added=r.added,
                                    timings_ms=r.timings_ms).model_dump()
    if event.kind == "round" and event.generation is not None:
        g = event.generation
        return GenerationRoundPublic(round=g.round, kind=g.kind, prompt_tokens=g.prompt_tokens,
                                     cached_tokens=g.cached_tokens, completion_tokens=g.completion_tokens,
                                     ttft_ms=g.ttft_ms, total_ms=g.total_ms, min_prob=g.min_prob,
                                     low_tokens=g.low_tokens).model_dump()
    return {"text": event.text}

