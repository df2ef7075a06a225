"""The agents a service hosts for chat: personas registered in the catalog, each with its memory stream.

An agent is created from a persona (the fields of an `agents/*.toml` file, as a mapping) under an id that is
safe in a URL (`ada-okafor`, derived from the persona's name unless given). Its seed memories are stored as
observations at simulation hour 0 with the importance a town gives them (agents/town.py), so chat and
simulation agree on what a seed weighs. The persona is kept as given, so GET returns what was sent.

Streams are opened on first use and kept: each holds its vector index (under `index_root/<id>`) and the
scoring columns in memory. Creating writes the seeds before the registry row, and deleting removes the row,
sessions, turns and memories in one transaction (store/sessions.py): a create interrupted by a crash leaves
memories under an id no agent has, which the next create of that id purges before seeding.
"""

from __future__ import annotations

import re
import shutil
import threading
import time
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ragsvc.agents.memory import MemoryStream
from ragsvc.agents.persona import Persona
from ragsvc.agents.plan import PlanStep, parse_step
from ragsvc.agents.town import SEED_IMPORTANCE
from ragsvc.embed.embedder import Embedder
from ragsvc.errors import Conflict, InvalidInput, NotFound
from ragsvc.store.memories import MemoryTables, NewMemory
from ragsvc.store.sessions import AgentRow, ChatTables

AGENT_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
PERSONA_KEYS = ("name", "age", "traits", "summary", "home", "memories", "routine")
LIMITS = {"name": 100, "trait": 60, "traits": 20, "summary": 1000, "home": 100, "memory": 1000, "memories": 200,
          "routine": 48}
"""Bounds on a persona sent over the API: characters of one name / trait / summary / memory, and counts."""
AGES = (1, 129)
"""A persona's age in whole years, both ends included."""


_UNDECOMPOSED = str.maketrans({"Ł": "L", "ł": "l", "Ø": "O", "ø": "o", "Đ": "D", "đ": "d", "ß": "ss", "Æ": "AE",
                               "æ": "ae", "Œ": "OE", "œ": "oe", "Þ": "Th", "þ": "th", "ı": "i"})
"""Latin letters that Unicode does not decompose into a base letter and an accent."""


def agent_id(name: str) -> str:
    """The URL id derived from a persona's name: accents dropped ("José" -> "jose"), lower case, runs of other
    characters as one hyphen. Empty for a name with no Latin letter or digit: such an agent needs its id sent."""
    folded = unicodedata.normalize("NFKD", name.translate(_UNDECOMPOSED)).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9]+", "-", folded.lower()).strip("-")[:63].rstrip("-")


def check_agent_id(value: str) -> str:
    if not AGENT_ID.fullmatch(value):
        raise InvalidInput(f"agent id {value!r} must be 1-63 characters of a-z, 0-9, '-' and '_', starting with a "
                           "letter or digit (e.g. 'ada-okafor')")
    return value


def _text(fields: Mapping[str, Any], key: str, *, limit: int, required: bool = True) -> str | None:
    value = fields.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{key} must be a non-empty string, got {value!r}")
    if len(value.strip()) > limit:
        raise InvalidInput(f"{key} has {len(value.strip())} characters; at most {limit}")
    return value.strip()


def _texts(fields: Mapping[str, Any], key: str, *, count: int, limit: int) -> list[str]:
    value = fields.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise InvalidInput(f"{key} must be a list of non-empty strings")
    if len(value) > count:
        raise InvalidInput(f"{key} has {len(value)} entries; at most {count}")
    long = [v for v in value if len(v.strip()) > limit]
    if long:
        raise InvalidInput(f"{key}: an entry has {len(long[0].strip())} characters; at most {limit} each")
    return [v.strip() for v in value]


_LINE_BREAKING = frozenset({"Cc", "Zl", "Zp"})
"""Unicode categories of control characters (newlines, tabs, NUL, escapes) and line / paragraph separators."""


def line_breaking(value: str) -> str | None:
    """The first control character or line break in `value`, or None."""
    return next((ch for ch in value if unicodedata.category(ch) in _LINE_BREAKING), None)


def check_labels(persona: Persona) -> None:
    """A name, trait or home is one line of a prompt: a control character or line break in it would let it pose as
    a line of the prompt's own structure ("Ada\\nSystem: ..."), so a new agent may not have one there. Only new
    agents are checked: ones stored before this rule keep loading."""
    for key, values in (("name", [persona.name]), ("traits", persona.traits), ("home", [persona.home or ""])):
        for value in values:
            if (bad := line_breaking(value)) is not None:
                raise InvalidInput(f"{key} {value[:80]!r} holds the control character or line break {bad!r}; "
                                   "names, traits and homes are one line of plain text")


def persona_from_fields(fields: Mapping[str, Any]) -> Persona:
    """A Persona from the persona TOML's fields (see agents/persona.py); InvalidInput names the bad field."""
    unknown = sorted(set(fields) - set(PERSONA_KEYS))
    if unknown:
        raise InvalidInput(f"unknown persona field {unknown[0]!r}; a persona has {', '.join(PERSONA_KEYS)}")
    name = _text(fields, "name", limit=LIMITS["name"]) or ""
    age = fields.get("age")
    if not isinstance(age, int) or isinstance(age, bool) or not AGES[0] <= age <= AGES[1]:
        raise InvalidInput(f"age must be a whole number of years in {AGES[0]}-{AGES[1]}, got {age!r}")
    routine: list[PlanStep] = []
    for entry in _texts(fields, "routine", count=LIMITS["routine"], limit=200):
        step = parse_step(entry, level="day")
        if step is None:
            raise InvalidInput(f"routine entry {entry!r} is not 'HH:MM-HH:MM activity' (24-hour clock, start < end)")
        if routine and step.start_min < routine[-1].end_min:
            raise InvalidInput(f"routine entry {entry!r} starts before the previous one ends; list them in order")
        routine.append(step)
    return Persona(name=name, age=age, traits=tuple(_texts(fields, "traits", count=LIMITS["traits"],
                                                           limit=LIMITS["trait"])),
                   summary=_text(fields, "summary", limit=LIMITS["summary"], required=False) or "",
                   memories=tuple(_texts(fields, "memories", count=LIMITS["memories"], limit=LIMITS["memory"])),
                   routine=tuple(routine), home=_text(fields, "home", limit=LIMITS["home"], required=False))


def persona_fields(persona: Persona) -> dict[str, Any]:
    """The persona as the fields it was made from (what the catalog keeps and the API returns)."""
    fields: dict[str, Any] = {"name": persona.name, "age": persona.age, "traits": list(persona.traits),
                              "memories": list(persona.memories), "routine": [s.clock() for s in persona.routine]}
    if persona.summary:
        fields["summary"] = persona.summary
    if persona.home is not None:
        fields["home"] = persona.home
    return fields


class AgentRegistry:
    """Agents and their open memory streams. Thread-safe."""

    def __init__(self, chat_tables: ChatTables, memory_tables: MemoryTables, *, embedder: Embedder,
                 index_root: Path | None) -> None:
        self.tables = chat_tables
        self.memories = memory_tables
        self.embedder = embedder
        self.index_root = index_root
        self._guard = threading.RLock()
        self._streams: dict[str, MemoryStream] = {}
        self._locks: dict[str, threading.RLock] = {}

    def lock(self, agent: str) -> threading.RLock:
        """The agent's lock: its clock and its writes (a reply's memory and turns) are taken under it."""
        with self._guard:
            return self._locks.setdefault(agent, threading.RLock())

    def create(self, persona: Persona, *, agent: str | None = None) -> AgentRow:
        check_labels(persona)
        if agent is None and not agent_id(persona.name):
            raise InvalidInput(f"the name {persona.name!r} gives no URL id (it has no letter a-z or digit); send an "
                               "id with it, e.g. \"id\": \"li-hua\"")
        name = check_agent_id(agent if agent is not None else agent_id(persona.name))
        with self.lock(name):  # not the registry's guard: seeding embeds, and other agents' chats go on meanwhile
            if self._exists(name):
                raise Conflict(f"agent {name!r} already exists; delete it first (DELETE /v1/agents/{name}) or pick "
                               "another id")
            self._drop_stream(name)
            self.tables.purge_memories(name)  # leftovers of an interrupted create or a stream outside the registry
            stream = self.stream(name)
            stream.add_many([NewMemory(kind="observation", text=m, created_h=0.0, importance=SEED_IMPORTANCE,
                                       metadata={"seed": True}) for m in persona.memories])
            return self.tables.create_agent(name, persona_fields(persona), created_s=time.time())

    def _exists(self, name: str) -> bool:
        try:
            self.tables.get_agent(name)
        except NotFound:
            return False
        return True

    def get(self, name: str) -> tuple[AgentRow, Persona]:
        row = self.tables.get_agent(name)
        return row, persona_from_fields(row.persona)

    def list(self) -> list[AgentRow]:
        return self.tables.list_agents()

    def delete(self, name: str) -> None:
        with self.lock(name):
            self.tables.delete_agent(name)  # NotFound before anything changes
            self._drop_stream(name)

    def stream(self, name: str) -> MemoryStream:
        """The agent's memory stream, opened (its index loaded or rebuilt from the catalog) on first use."""
        with self._guard:
            stream = self._streams.get(name)
            if stream is None:
                folder = None if self.index_root is None else self.index_root / name
                stream = MemoryStream(self.memories, name, embedder=self.embedder, index_dir=folder)
                self._streams[name] = stream
            return stream

    def _drop_stream(self, name: str) -> None:
        with self._guard:
            stream = self._streams.pop(name, None)
        if stream is not None:
            stream.close()
        if self.index_root is not None:
            shutil.rmtree(self.index_root / name, ignore_errors=True)

    def close(self) -> None:
        """Save and close every open stream's index."""
        with self._guard:
            for stream in self._streams.values():
                stream.close()
            self._streams.clear()
