"""Agents and chat sessions: register agents from personas, talk to them, read and end sessions.

    POST   /v1/agents                        create from a persona (seed memories become observations)
    GET    /v1/agents, /v1/agents/{agent}    list, get
    DELETE /v1/agents/{agent}                the agent, its sessions and its memories
    GET    /v1/agents/{agent}/memories       its newest memories (importance null while pending)
    POST   /v1/agents/{agent}/sessions       start a session -> its id
    GET    /v1/agents/{agent}/sessions       the agent's sessions
    GET    /v1/sessions/{id}                 the history: turns with roles, times and memory ids
    DELETE /v1/sessions/{id}                 the history (the agent keeps its memories of it)
    POST   /v1/sessions/{id}/messages        {content, stream?} -> the agent's reply and the memories it used

Messages to one session are answered in the order they arrive: each waits on the session's asyncio lock (FIFO)
before it takes a worker thread, so a queue of messages holds no threads. Sessions of different agents, and of
one agent, run at once and share the engine. With `stream: true` the reply is server-sent events in the order
they happen, as for /v1/answer: `memories` (what was retrieved), `text` (the reply as it is generated), then
`reply` (the object the non-streaming call returns) or `error` ({error, detail, status}); a bad request (unknown
session, empty message, no model) is a plain 4xx before the stream starts. A model failure is a 502 / 504
(in-band `error` when streaming) and writes nothing; so does a client that goes away, whether its message was
still queued or being answered, streamed or not.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse

from ragsvc.agents.chat import ReplyCancelled
from ragsvc.agents.chat_service import ChatService
from ragsvc.agents.memory import Retrieval
from ragsvc.agents.registry import persona_from_fields
from ragsvc.api.agent_schemas import (
    AgentCreate,
    AgentPublic,
    MemoryPublic,
    MessageCreate,
    MessageReply,
    RecalledPublic,
    SessionCreate,
    SessionHistory,
    SessionPublic,
    TurnPublic,
)
from ragsvc.api.auth import requires
from ragsvc.api.deps import ChatDep
from ragsvc.api.disconnect import CLIENT_CLOSED, unless_gone
from ragsvc.api.parsed_body import ParsedBodyRoute
from ragsvc.api.sse import Emit, events_from_thread
from ragsvc.errors import InvalidInput
from ragsvc.llm.generator import Generator
from ragsvc.store.memories import MEMORY_KINDS

router = APIRouter(prefix="/v1", tags=["agents"], route_class=ParsedBodyRoute)
MAX_HISTORY_TURNS = 1000
"""Turns one GET of a session returns at most (the latest by default): a session can grow without end, its
answer should not."""


def _public(chat: ChatService, name: str) -> AgentPublic:
    row, _ = chat.registry.get(name)
    return AgentPublic.of(row, chat.registry.memories.count(name))


@router.post("/agents", status_code=201, response_model=AgentPublic, openapi_extra=requires("admin"))
def create_agent(body: AgentCreate, chat: ChatDep) -> AgentPublic:
    row = chat.registry.create(persona_from_fields(body.persona()), agent=body.id)
    return _public(chat, row.name)


@router.get("/agents", response_model=list[AgentPublic])
def list_agents(chat: ChatDep) -> list[AgentPublic]:
    return [AgentPublic.of(row, chat.registry.memories.count(row.name)) for row in chat.registry.list()]


@router.get("/agents/{agent}", response_model=AgentPublic)
def get_agent(agent: str, chat: ChatDep) -> AgentPublic:
    return _public(chat, agent)


@router.delete("/agents/{agent}", status_code=204, openapi_extra=requires("admin"))
def delete_agent(agent: str, chat: ChatDep) -> Response:
    chat.delete_agent(agent)
    return Response(status_code=204)


@router.get("/agents/{agent}/memories", response_model=list[MemoryPublic])
def agent_memories(agent: str, chat: ChatDep, limit: int = Query(20, ge=1, le=1000),
                   kind: str | None = Query(None, description=f"one of {', '.join(MEMORY_KINDS)}")
                   ) -> list[MemoryPublic]:
    chat.registry.get(agent)
    if kind is not None and kind not in MEMORY_KINDS:
        raise InvalidInput(f"kind {kind!r} is unknown; use one of {', '.join(MEMORY_KINDS)}")
    kinds = None if kind is None else [kind]
    return [MemoryPublic.of(m) for m in chat.registry.memories.recent(agent, limit=limit, kinds=kinds)]


@router.post("/agents/{agent}/sessions", status_code=201, response_model=SessionPublic)
def create_session(agent: str, chat: ChatDep, body: SessionCreate | None = None) -> SessionPublic:
    return SessionPublic.of(chat.create_session(agent, user=(body or SessionCreate()).user))


@router.get("/agents/{agent}/sessions", response_model=list[SessionPublic])
def list_sessions(agent: str, chat: ChatDep, limit: int = Query(100, ge=1, le=1000),
                  offset: int = Query(0, ge=0, le=2**31 - 1)) -> list[SessionPublic]:
    return [SessionPublic.of(s) for s in chat.list_sessions(agent, limit=limit, offset=offset)]


@router.get("/sessions/{session_id}", response_model=SessionHistory)
def get_session(session_id: str, chat: ChatDep,
                last: int = Query(MAX_HISTORY_TURNS, ge=1, le=MAX_HISTORY_TURNS,
                                  description="the most recent turns to return (`num_turns` counts them all)"),
                before_seq: int | None = Query(None, ge=1, le=2**53,
                                               description="only turns before this one: pages back through a long "
                                                           "session from its first returned turn's `seq`")
                ) -> SessionHistory:
    session, turns = chat.history(session_id, last=last, before_seq=before_seq)
    return SessionHistory(**SessionPublic.of(session).model_dump(), turns=[TurnPublic.of(t) for t in turns])


@router.delete("/sessions/{session_id}", status_code=204)
def delete_session(session_id: str, chat: ChatDep) -> Response:
    chat.delete_session(session_id)
    return Response(status_code=204)


class _SessionQueues:
    """One FIFO asyncio lock per session with messages in flight (dropped when none wait)."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


def _queues(request: Request) -> _SessionQueues:
    state = request.app.state
    if getattr(state, "session_queues", None) is None:  # on the event loop: no race
        state.session_queues = _SessionQueues()
    return state.session_queues


@router.post("/sessions/{session_id}/messages", response_model=MessageReply,
             responses={200: {"content": {"text/event-stream": {}}, "description": "with stream: true"}})
async def post_message(session_id: str, body: MessageCreate, request: Request, chat: ChatDep) -> Any:
    if body.stream:  # the checks come first: once the stream has begun, a 4xx can only be an in-band event
        await asyncio.to_thread(_check, chat, session_id, body, request)
        return StreamingResponse(_events(chat, session_id, body, _generator(request), _queues(request)),
                                 media_type="text/event-stream", headers={"Cache-Control": "no-store"})
    queues, gone = _queues(request), threading.Event()

    def stop_if_gone(_: str) -> None:
        if gone.is_set():
            raise ReplyCancelled

    async def reply() -> Any:
        async with queues.hold(session_id):
            if gone.is_set():  # its client left while it waited its turn: nothing to answer
                raise ReplyCancelled
            await asyncio.to_thread(_check, chat, session_id, body, request)
            return await asyncio.to_thread(chat.send, session_id, body.content, _generator(request),
                                           max_tokens=body.max_tokens, on_text=stop_if_gone)

    # the queue place is taken before any thread hop: `reply()` starts as a task before this coroutine yields
    result = await unless_gone(request, reply(), gone, ReplyCancelled)
    return Response(status_code=CLIENT_CLOSED) if result is None else MessageReply.of(result)


def _generator(request: Request) -> Generator:
    return request.app.state.composition.require_generator()


def _check(chat: ChatService, session_id: str, body: MessageCreate, request: Request) -> None:
    """What is refused before any work: a bad message or budget, an unknown session, no model configured."""
    chat.check_send(session_id, body.content, max_tokens=body.max_tokens)
    _generator(request)


async def _events(chat: ChatService, session_id: str, body: MessageCreate, generator: Generator,
                  queues: _SessionQueues) -> AsyncIterator[str]:
    def work(emit: Emit) -> tuple[str, Any]:
        def on_recall(recalled: Retrieval) -> None:
            emit("memories", {"memory_ids": [m.memory.id for m in recalled.memories],
                              "memories": [RecalledPublic.of(m).model_dump() for m in recalled.memories]})

        result = chat.send(session_id, body.content, generator, max_tokens=body.max_tokens,
                           on_recall=on_recall, on_text=lambda text: emit("text", {"text": text}))
        return "reply", MessageReply.of(result).model_dump()

    async with queues.hold(session_id):
        async for line in events_from_thread(work, cancelled=ReplyCancelled):
            yield line
