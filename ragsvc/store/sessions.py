"""Chat with agents in the catalog: the agents registry, chat sessions and their turns. Only SQL lives here.

Three tables (store/schema.py): `chat_agents` (name -> persona JSON), `chat_sessions` (which agent, who talks
to it, when it began on the wall clock and on the agent's simulation clock) and `chat_turns` (one row per
utterance, numbered within its session). An exchange (the user's message and the agent's reply) is written in
one transaction, so a history never shows a question without its answer; ChatService runs it inside the
catalog's shared transaction (store/transaction.py) with the exchange's `chat` memory, so a crash leaves the
memory and both turns, or none of them. Deleting an agent removes its row, sessions, turns and memories in
one transaction too.

Like MemoryTables, these take the catalog's connection, lock and Transaction (`Catalog.chat_tables()`).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import duckdb

from ragsvc.errors import Conflict, NotFound
from ragsvc.store.transaction import Transaction

Role = Literal["user", "agent"]


@dataclass(frozen=True, slots=True)
class AgentRow:
    name: str
    persona: Mapping[str, Any]
    """The persona's fields as given (name, age, traits, summary, home, memories, routine)."""
    created_s: float


@dataclass(frozen=True, slots=True)
class SessionRow:
    id: str
    agent: str
    user: str
    created_s: float
    """Wall clock (Unix seconds) when the session began."""
    start_h: float
    """The agent's simulation clock when the session began."""
    num_turns: int = 0


@dataclass(frozen=True, slots=True)
class TurnRow:
    seq: int
    role: Role
    content: str
    created_s: float
    at_h: float
    memory_ids: tuple[int, ...]
    """For an agent turn, the memories its reply was grounded in; empty for a user turn."""
    observation_id: int | None
    """The chat memory the exchange became (the same id on both turns of an exchange)."""


@dataclass(frozen=True, slots=True)
class NewTurn:
    role: Role
    content: str
    created_s: float
    at_h: float
    memory_ids: tuple[int, ...] = ()


class ChatTables:
    """Read and write the agents registry, sessions and turns through a catalog's connection and lock."""

    def __init__(self, conn: duckdb.DuckDBPyConnection, lock: threading.RLock, *,
                 transaction: Transaction | None = None) -> None:
        self._conn = conn
        self._lock = lock
        self._tx = transaction or Transaction(conn, lock)

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._conn.execute(sql, list(params)).fetchall()

    def _transaction(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        with self._tx.write():
            for sql, params in statements:
                self._conn.execute(sql, list(params))

    # -- agents --------------------------------------------------------------------------------------------

    def create_agent(self, name: str, persona: Mapping[str, Any], *, created_s: float) -> AgentRow:
        with self._lock:
            if self._rows("SELECT 1 FROM chat_agents WHERE name = ?", [name]):
                raise Conflict(f"agent {name!r} already exists; delete it first (DELETE /v1/agents/{name}) or "
                               "pick another name")
            self._conn.execute("INSERT INTO chat_agents VALUES (?, ?, ?)", [name, json.dumps(dict(persona)), created_s])
        return AgentRow(name, dict(persona), created_s)

    def get_agent(self, name: str) -> AgentRow:
        rows = self._rows("SELECT name, persona, created_s FROM chat_agents WHERE name = ?", [name])
        if not rows:
            raise NotFound(f"agent {name!r} does not exist; create it with POST /v1/agents (GET /v1/agents lists "
                           "them)")
        return _agent(rows[0])

    def list_agents(self) -> list[AgentRow]:
        return [_agent(r) for r in self._rows("SELECT name, persona, created_s FROM chat_agents ORDER BY name")]

    def delete_agent(self, name: str) -> None:
        """The agent, its sessions, their turns and its memories, in one transaction."""
        self.get_agent(name)
        self._transaction([
            ("DELETE FROM chat_turns WHERE session_id IN (SELECT id FROM chat_sessions WHERE agent = ?)", [name]),
            ("DELETE FROM chat_sessions WHERE agent = ?", [name]),
            ("DELETE FROM agent_memory_vectors WHERE agent = ?", [name]),
            ("DELETE FROM agent_memories WHERE agent = ?", [name]),
            ("DELETE FROM chat_agents WHERE name = ?", [name]),
        ])

    def purge_memories(self, name: str) -> None:
        """Memories left under a name no registered agent has (a stream written outside the registry)."""
        self._transaction([("DELETE FROM agent_memory_vectors WHERE agent = ?", [name]),
                           ("DELETE FROM agent_memories WHERE agent = ?", [name])])

    def agent_clock_h(self, name: str) -> float:
        """The latest time on the agent's simulation clock its memories record (0 for none)."""
        rows = self._rows("SELECT max(greatest(created_h, last_accessed_h)) FROM agent_memories WHERE agent = ?",
                          [name])
        return float(rows[0][0] or 0.0)

    # -- sessions ------------------------------------------------------------------------------------------

    def create_session(self, agent: str, *, user: str, created_s: float, start_h: float) -> SessionRow:
        self.get_agent(agent)
        session_id = uuid.uuid4().hex
        with self._lock:
            self._conn.execute("INSERT INTO chat_sessions VALUES (?, ?, ?, ?, ?)",
                               [session_id, agent, user, created_s, start_h])
        return SessionRow(session_id, agent, user, created_s, start_h)

    def get_session(self, session_id: str) -> SessionRow:
        rows = self._rows(_SESSIONS + " WHERE s.id = ?", [session_id])
        if not rows:
            raise NotFound(f"session {session_id!r} does not exist; start one with POST /v1/agents/{{agent}}/sessions")
        return _session(rows[0])

    def list_sessions(self, agent: str, *, limit: int = 100, offset: int = 0) -> list[SessionRow]:
        self.get_agent(agent)
        return [_session(r) for r in self._rows(_SESSIONS + " WHERE s.agent = ? ORDER BY s.created_s, s.id "
                                                "LIMIT ? OFFSET ?", [agent, int(limit), int(offset)])]

    def delete_session(self, session_id: str) -> None:
        """The session and its history; the memories its exchanges became stay (the agent still remembers)."""
        self.get_session(session_id)
        self._transaction([("DELETE FROM chat_turns WHERE session_id = ?", [session_id]),
                           ("DELETE FROM chat_sessions WHERE id = ?", [session_id])])

    # -- turns ---------------------------------------------------------------------------------------------

    def turns(self, session_id: str, *, last: int | None = None, before_seq: int | None = None) -> list[TurnRow]:
        """The session's turns in order: only the `last` ones when given, and only those before `before_seq`."""
        sql = ("SELECT seq, role, content, created_s, at_h, memory_ids, observation_id FROM chat_turns "
               "WHERE session_id = ?" + (" AND seq < ?" if before_seq is not None else "") + " ORDER BY seq")
        params: list[Any] = [session_id] + ([int(before_seq)] if before_seq is not None else [])
        if last is not None:
            sql = f"SELECT * FROM ({sql} DESC LIMIT ?) ORDER BY seq"
            params.append(int(last))
        return [_turn(r) for r in self._rows(sql, params)]

    def append_exchange(self, session_id: str, turns: Sequence[NewTurn], *, observation_id: int | None
                        ) -> list[TurnRow]:
        """Append `turns` after the session's last, in one transaction (or in the caller's `atomic()` one: a chat
        exchange writes its memory and its turns together); return them as stored. NotFound when the session was
        deleted meanwhile (nothing is written then)."""
        with self._tx.write():
            if not self._conn.execute("SELECT 1 FROM chat_sessions WHERE id = ?", [session_id]).fetchall():
                raise NotFound(f"session {session_id!r} was deleted while its reply was being written")
            last = self._conn.execute("SELECT coalesce(max(seq), 0) FROM chat_turns WHERE session_id = ?",
                                      [session_id]).fetchall()[0][0]
            rows = [TurnRow(int(last) + 1 + i, t.role, t.content, t.created_s, t.at_h, tuple(t.memory_ids),
                            observation_id) for i, t in enumerate(turns)]
            self._conn.executemany(
                "INSERT INTO chat_turns VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [[session_id, r.seq, r.role, r.content, r.created_s, r.at_h, list(r.memory_ids), observation_id]
                 for r in rows])
        return rows


_SESSIONS = ("SELECT s.id, s.agent, s.user_name, s.created_s, s.start_h, "
             "(SELECT count(*) FROM chat_turns t WHERE t.session_id = s.id) FROM chat_sessions s")


def _agent(row: tuple[Any, ...]) -> AgentRow:
    return AgentRow(name=row[0], persona=json.loads(row[1]), created_s=float(row[2]))


def _session(row: tuple[Any, ...]) -> SessionRow:
    return SessionRow(id=row[0], agent=row[1], user=row[2], created_s=float(row[3]), start_h=float(row[4]),
                      num_turns=int(row[5]))


def _turn(row: tuple[Any, ...]) -> TurnRow:
    return TurnRow(seq=int(row[0]), role=row[1], content=row[2], created_s=float(row[3]), at_h=float(row[4]),
                   memory_ids=tuple(int(i) for i in row[5]), observation_id=None if row[6] is None else int(row[6]))
