"""Chat sessions with registered agents: start one, send a message and get the agent's grounded reply, read the
history, end it. The prompt and reply logic is agents/chat.py; storage is store/sessions.py.

One message, in order:
1. the message is checked (empty or too long is refused before anything else);
2. under the session's lock, so two messages to one session are answered one after the other and each reply
   sees the exchange before it, the session's latest turns are read;
3. under the agent's lock (sessions of one agent share its clock and its stream) the clock is read and the
   agent retrieves from its memories, which marks them accessed at that time;
4. the reply is generated without the agent's lock, so sessions of one agent, and of different agents, are
   answered at once and the engine batches them;
5. under the agent's lock again the exchange becomes a `chat` memory (importance pending, rated by the
   agent's ImportanceWorker when one runs) and its two turns, in one catalog transaction
   (`MemoryStream.add_with`); the memory reaches the agent's index only after that commit.

A model failure at step 4 (or a client that left) writes nothing. A failure or crash during step 5 leaves the
whole exchange (memory and both turns) or none of it: the history and the agent's memory always agree, and an
exchange the client was told about (its reply returned) is stored in full.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from ragsvc.agents.chat import (
    ChatOptions,
    HistoryLine,
    OnText,
    chat_prompt,
    check_message,
    clean_reply,
    exchange_memory,
    generate_reply,
    session_clock_h,
)
from ragsvc.agents.importance import ImportanceScorer
from ragsvc.agents.importance_worker import ImportanceWorker
from ragsvc.agents.memory import MemoryStream, Retrieval, RetrievalOptions, RetrievedMemory
from ragsvc.agents.registry import AgentRegistry, line_breaking
from ragsvc.errors import InvalidInput
from ragsvc.llm.generator import Generator, Usage
from ragsvc.store.memories import NewMemory
from ragsvc.store.sessions import NewTurn, SessionRow, TurnRow

logger = logging.getLogger(__name__)

MAX_USER_CHARS = 100


@dataclass(frozen=True, slots=True)
class ChatReply:
    session: str
    agent: str
    user_turn: TurnRow
    agent_turn: TurnRow
    memories: tuple[RetrievedMemory, ...]
    """The memories the reply was grounded in, best first (their ids are `agent_turn.memory_ids`)."""
    finish_reason: str
    usage: Usage

    @property
    def reply(self) -> str:
        return self.agent_turn.content


OnRecall = Callable[[Retrieval], None]
"""Receives the retrieval of a message before the reply is generated (the API streams it as an event)."""


class _KeyedLocks:
    """One lock per key, dropped when nobody holds or waits for it (sessions come and go)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._locks[key]
                if users == 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)


class ChatService:
    """Sessions over an AgentRegistry. Thread-safe; `close()` stops the importance workers (not the registry)."""

    def __init__(self, registry: AgentRegistry, *, options: ChatOptions | None = None,
                 wall_clock: Callable[[], float] = time.time, score_importance: bool = True) -> None:
        self.registry = registry
        self.tables = registry.tables
        self.options = options or ChatOptions()
        self._wall = wall_clock
        self._score_importance = score_importance
        self._sessions = _KeyedLocks()
        self._workers: dict[str, ImportanceWorker] = {}
        self._guard = threading.Lock()

    # -- sessions ------------------------------------------------------------------------------------------

    def create_session(self, agent: str, *, user: str = "a visitor") -> SessionRow:
        user = " ".join(user.split())
        if not user or len(user) > MAX_USER_CHARS:
            raise InvalidInput(f"user must be 1-{MAX_USER_CHARS} characters: the name the agent calls you by")
        if (bad := line_breaking(user)) is not None:  # one line of the prompt, as an agent's name is
            raise InvalidInput(f"user {user[:80]!r} holds the control character {bad!r}; send plain text")
        with self.registry.lock(agent):
            self.tables.get_agent(agent)  # NotFound first
            return self.tables.create_session(agent, user=user, created_s=self._wall(),
                                              start_h=self.tables.agent_clock_h(agent))

    def history(self, session_id: str, *, last: int | None = None, before_seq: int | None = None
                ) -> tuple[SessionRow, list[TurnRow]]:
        """The session and its turns in order: the `last` ones (all when None) before `before_seq` (if given)."""
        session = self.tables.get_session(session_id)
        return session, self.tables.turns(session_id, last=last, before_seq=before_seq)

    def list_sessions(self, agent: str, *, limit: int = 100, offset: int = 0) -> list[SessionRow]:
        return self.tables.list_sessions(agent, limit=limit, offset=offset)

    def delete_session(self, session_id: str) -> None:
        session = self.tables.get_session(session_id)
        with self.registry.lock(session.agent):
            self.tables.delete_session(session_id)

    def delete_agent(self, agent: str) -> None:
        """The agent, its sessions and memories; its importance worker stops first."""
        self.tables.get_agent(agent)
        with self._guard:
            worker = self._workers.pop(agent, None)
        if worker is not None:
            worker.close()
        self.registry.delete(agent)

    # -- messages ------------------------------------------------------------------------------------------

    def check_send(self, session_id: str, content: str, *, max_tokens: int | None = None) -> SessionRow:
        """What `send` refuses before any work (bad message, unknown session): for callers that must answer
        a clear 4xx before they start streaming."""
        check_message(content)
        if max_tokens is not None:
            ChatOptions(max_tokens=max_tokens)
        return self.tables.get_session(session_id)

    def send(self, session_id: str, content: str, generator: Generator, *, max_tokens: int | None = None,
             on_recall: OnRecall | None = None, on_text: OnText | None = None) -> ChatReply:
        """The agent's reply to `content` in the session (see the module docstring for the steps)."""
        message = check_message(content)
        session = self.check_send(session_id, content, max_tokens=max_tokens)
        _, persona = self.registry.get(session.agent)
        with self._sessions.hold(session_id):
            history = [HistoryLine(t.role, t.content)
                       for t in self.tables.turns(session_id, last=self.options.history_turns)]
            asked_s = self._wall()
            stream, now_h, recalled = self._recall(session, message, asked_s)
            if on_recall is not None:
                on_recall(recalled)
            memories = [m.memory for m in recalled.memories]
            prompt = chat_prompt(persona, user=session.user, memories=memories, history=history, message=message,
                                 options=self.options)
            generation = generate_reply(generator, prompt, max_tokens=max_tokens or self.options.max_tokens,
                                        on_text=on_text)
            reply = clean_reply(generation.text, persona.name)
            turns = [NewTurn("user", message, asked_s, now_h),
                     NewTurn("agent", reply, self._wall(), now_h, tuple(m.id for m in memories))]
            memory = NewMemory(kind="chat", text=exchange_memory(user=session.user, agent=persona.name,
                                                                 message=message, reply=reply,
                                                                 limit=self.options.transcript_chars),
                               created_h=now_h, metadata={"session": session_id, "partner": session.user})
            with self.registry.lock(session.agent):
                self.tables.get_session(session_id)  # deleted while the reply was written: 404, nothing stored
                _, (user_turn, agent_turn) = stream.add_with(memory, lambda record: self.tables.append_exchange(
                    session_id, turns, observation_id=record.id))
        self._score_later(session.agent, generator)
        return ChatReply(session=session_id, agent=session.agent, user_turn=user_turn, agent_turn=agent_turn,
                         memories=recalled.memories, finish_reason=generation.finish_reason, usage=generation.usage)

    def _recall(self, session: SessionRow, message: str, asked_s: float) -> tuple[MemoryStream, float, Retrieval]:
        """(the agent's stream, the clock now, what it recalls for `message`), under the agent's lock."""
        with self.registry.lock(session.agent):
            self.tables.get_session(session.id)  # the agent (and so its stream) may have been deleted meanwhile
            stream = self.registry.stream(session.agent)
            now_h = session_clock_h(start_h=session.start_h, created_s=session.created_s, now_s=asked_s,
                                    floor_h=self.tables.agent_clock_h(session.agent))
            if not self.options.memories_k:
                return stream, now_h, Retrieval((), 0)
            return stream, now_h, stream.retrieve(message, now_h=now_h,
                                                  options=RetrievalOptions(k=self.options.memories_k))

    def _score_later(self, agent: str, generator: Generator) -> None:
        if not self._score_importance:
            return
        with self._guard:
            worker = self._workers.get(agent)
            if worker is None:
                worker = ImportanceWorker(self.registry.stream(agent), ImportanceScorer(generator))
                self._workers[agent] = worker
        worker.notify()

    def drain(self, *, timeout_s: float = 60.0) -> None:
        """Wait until every agent's pending importance is scored (tests; a clean shutdown)."""
        with self._guard:
            workers = list(self._workers.values())
        for worker in workers:
            worker.drain(timeout_s=timeout_s)

    def close(self) -> None:
        with self._guard:
            workers, self._workers = list(self._workers.values()), {}
        for worker in workers:
            worker.close()
