"""OpenAI-compatible routes: `/v1/models`, `/v1/completions`, `/v1/chat/completions` (plain and SSE streaming).

The router finds the model through `app.state.served_model` (a ServedModel, set by the lifespan in
`ragsvc.api.model_app`), so the same router serves the standalone model server and `ragsvc serve`.
Every error, including request validation, leaves in OpenAI's shape `{"error": {message, type, param, code}}`
through OpenAIErrorRoute, because OpenAI clients parse that shape and nothing else.

A streaming client that disconnects cancels the response task; the cancellation reaches the engine's async
generator, which aborts the request and frees its KV blocks at once.

Tokenising (and rendering the chat template) runs on the served model's own one-thread executor, never on
the event loop: a prompt near the size bound takes a second to tokenise, and `/v1/models`, `/health` and
every streaming response must not stall behind it. One thread, because the tokenizer copy is not safe to
call from two threads at once; tokenising is serialised, the event loop is not.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ragsvc.api import openai_convert as conv
from ragsvc.api.auth import requires
from ragsvc.api.disconnect import CLIENT_CLOSED, until_disconnect
from ragsvc.api.error_shapes import openai_error_body
from ragsvc.api.errors import error_headers
from ragsvc.api.openai_limits import OpenAILimits, check_chat, check_completion
from ragsvc.api.openai_schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    ModelCard,
    ModelList,
)
from ragsvc.api.openai_stream import ChoiceJob, Collected, chat_response, completion_response, stream_events
from ragsvc.api.parsed_body import ParsedBodyRoute
from ragsvc.api.request_id import request_id_of
from ragsvc.api.validation_errors import relevant
from ragsvc.errors import InvalidInput, NotFound, NotReady, RagsvcError
from ragsvc.serving.async_engine import AsyncLLMEngine
from ragsvc.serving.engine import LLMEngine

logger = logging.getLogger(__name__)
T = TypeVar("T")

@dataclass(frozen=True)
class ServedModel:
    """What the routes need: the engine (for its tokenizer and limits), its async wrapper, accepted names."""

    engine: LLMEngine
    async_engine: AsyncLLMEngine
    names: tuple[str, ...]
    tokenizer: Any
    created: int
    tokenize_pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="ragsvc-tokenize"))
    """Where `tokenizer` is called (see the module docstring)."""

    @property
    def name(self) -> str:
        return self.names[0]

    async def off_loop(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn` (which uses `tokenizer`) on the tokenizer's thread and await its result."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.tokenize_pool, functools.partial(fn, *args, **kwargs))


def error_response(status: int, message: str, *, param: str | None = None, code: str | None = None,
                   request_id: str | None = None) -> JSONResponse:
    """`error_shapes.openai_error_body` as a response."""
    return JSONResponse(openai_error_body(status, message, param=param, code=code, request_id=request_id),
                        status_code=status)


def _validation_message(err: RequestValidationError) -> tuple[str, str | None]:
    errors = relevant(err.errors())
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    return f"{param or 'request'}: {first.get('msg')}", param


class OpenAIErrorRoute(ParsedBodyRoute):
    """Routes whose errors (validation, RagsvcError, anything unexpected) come back in OpenAI's error shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as err:
                message, param = _validation_message(err)
                return error_response(400, message, param=param, code="invalid_value")
            except StarletteHTTPException as err:  # FastAPI's own 4xx (a body it cannot parse, ...)
                return error_response(err.status_code, str(err.detail), code="invalid_value")
            except RagsvcError as err:
                param = err.detail.get("param") if isinstance(err.detail, dict) else None
                rid = request_id_of(request.scope) if err.status_code >= 500 else None
                if rid is not None:
                    logger.error("request %s: %s %s failed: %s", rid, request.method, request.url.path, err.message)
                response = error_response(err.status_code, err.message, param=param, code=err.code, request_id=rid)
                response.headers.update(error_headers(err))  # Retry-After with 429, WWW-Authenticate with 401
                return response
            except Exception:
                rid = request_id_of(request.scope)
                logger.exception("request %s: unexpected error serving %s %s", rid, request.method, request.url.path)
                return error_response(500, f"internal server error; the server log has it under request id {rid}",
                                      code="internal_error", request_id=rid)

        return route


def get_served_model(request: Request) -> ServedModel:
    served = getattr(request.app.state, "served_model", None)
    if served is None:
        raise NotReady("the model is not loaded yet (or this server hosts none); retry in a few seconds")
    return served


ServedModelDep = Annotated[ServedModel, Depends(get_served_model)]


def get_openai_limits(request: Request) -> OpenAILimits:
    """The app's per-request bounds: set by the model server's factory, else read once from the settings a
    hosting app keeps on its state (`serve --with-model`), else the defaults."""
    state = request.app.state
    limits = getattr(state, "openai_limits", None)
    if limits is None:
        settings = getattr(state, "settings", None)
        limits = OpenAILimits() if settings is None else OpenAILimits.from_settings(settings.model_api)
        state.openai_limits = limits
    return limits


LimitsDep = Annotated[OpenAILimits, Depends(get_openai_limits)]

router = APIRouter(prefix="/v1", tags=["openai"], route_class=OpenAIErrorRoute)


STREAMED: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}}, "description": "server-sent events with stream: true"}}
"""Documents the streamed answer beside the JSON one, so clients (and the fuzzer) expect either."""


def _check_model(served: ServedModel, model: str) -> None:
    if model not in served.names:
        raise NotFound(
            f"model {model!r} does not exist on this server; it serves {served.name!r} (see GET /v1/models)",
            detail={"param": "model"},
        )


@router.get("/models", response_model=ModelList)
async def list_models(served: ServedModelDep) -> ModelList:
    card = ModelCard(id=served.name, created=served.created, max_model_len=served.engine.max_model_len)
    return ModelList(data=[card])


@router.get("/models/{model_id:path}", response_model=ModelCard)
async def get_model(model_id: str, served: ServedModelDep) -> ModelCard:
    _check_model(served, model_id)
    return ModelCard(id=served.name, created=served.created, max_model_len=served.engine.max_model_len)


def _jobs(
    served: ServedModel, req: CompletionRequest | ChatCompletionRequest, prompts: list[list[int]],
    *, requested_max: int | None, logprobs: int | None, request_id: str, max_n: int,
) -> list[ChoiceJob]:
    """One job per (prompt, choice); choice index = prompt index × n + choice, as OpenAI numbers them."""
    if len(prompts) * req.n > max_n:
        raise InvalidInput(f"prompts × n must be at most {max_n} (RAGSVC_MODEL_API__MAX_N)", detail={"param": "n"})
    jobs = []
    for p_idx, ids in enumerate(prompts):
        max_tokens = conv.resolve_max_tokens(
            requested_max, prompt_len=len(ids), max_model_len=served.engine.max_model_len
        )
        for c in range(req.n):
            params = conv.build_params(req, max_tokens=max_tokens, logprobs=logprobs, choice=c)
            idx = p_idx * req.n + c
            jobs.append(ChoiceJob(index=idx, prompt_index=p_idx, request_id=f"{request_id}-{idx}",
                                  token_ids=ids, params=params))
    return jobs


async def _collect_all(served: ServedModel, jobs: list[ChoiceJob]) -> list[Collected]:
    async def one(job: ChoiceJob) -> Collected:
        collected = Collected(job=job)
        stream = served.async_engine.generate(job.request_id, job.token_ids, job.params)
        async with aclosing(stream):
            async for out in stream:
                collected.add(out)
        return collected

    async with asyncio.TaskGroup() as group:  # one failure cancels (and so aborts) the siblings
        tasks = [group.create_task(one(job)) for job in jobs]
    return [t.result() for t in tasks]


async def _collect_unless_gone(request: Request, served: ServedModel, jobs: list[ChoiceJob]) -> list[Collected] | None:
    """Collect every choice; None if the client hung up first, in which case every job is aborted at once
    (a non-streaming request is not cancelled by the server on its own)."""
    work = asyncio.ensure_future(_collect_all(served, jobs))
    watch = asyncio.ensure_future(until_disconnect(request))
    try:
        await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not work.done():
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
    return None if work.cancelled() else work.result()


def _sse(served: ServedModel, jobs: list[ChoiceJob], *, kind: str, req: Any, request_id: str) -> StreamingResponse:
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    events = stream_events(
        served.async_engine, jobs, kind=kind, request_id=request_id, model=served.name,
        include_usage=include_usage,
    )
    return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.post("/completions", openapi_extra=requires("read"), responses=STREAMED)
async def create_completion(req: CompletionRequest, served: ServedModelDep, limits: LimitsDep,
                            request: Request) -> Response:
    _check_model(served, req.model)
    conv.check_unsupported(req)
    check_completion(req, limits)
    prompts = await served.off_loop(conv.completion_prompts, req, served.tokenizer, vocab_size=len(served.tokenizer))
    request_id = conv.new_id("cmpl")
    jobs = _jobs(served, req, prompts, requested_max=req.max_tokens, logprobs=req.logprobs, request_id=request_id,
                 max_n=limits.max_n)
    if req.stream:
        return _sse(served, jobs, kind="completion", req=req, request_id=request_id)
    collected = await _collect_unless_gone(request, served, jobs)
    if collected is None:
        return Response(status_code=CLIENT_CLOSED)
    body = completion_response(collected, request_id=request_id, model=served.name, logprobs=req.logprobs)
    return JSONResponse(json.loads(body.model_dump_json()))


@router.post("/chat/completions", openapi_extra=requires("read"), responses=STREAMED)
async def create_chat_completion(req: ChatCompletionRequest, served: ServedModelDep, limits: LimitsDep,
                                 request: Request) -> Response:
    _check_model(served, req.model)
    conv.check_unsupported(req)
    check_chat(req, limits)
    prompt = await served.off_loop(conv.chat_prompt, req, served.tokenizer)
    logprobs = (req.top_logprobs or 0) if req.logprobs else None
    requested_max = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    request_id = conv.new_id("chatcmpl")
    jobs = _jobs(served, req, [prompt], requested_max=requested_max, logprobs=logprobs, request_id=request_id,
                 max_n=limits.max_n)
    if req.stream:
        return _sse(served, jobs, kind="chat", req=req, request_id=request_id)
    collected = await _collect_unless_gone(request, served, jobs)
    if collected is None:
        return Response(status_code=CLIENT_CLOSED)
    body = chat_response(collected, request_id=request_id, model=served.name, logprobs=req.logprobs)
    return JSONResponse(json.loads(body.model_dump_json()))
