"""A town's residents as memory streams: each persona's seed memories, and the seeded event in its host's.

Seeding is idempotent (a stream that already holds memories is left as it is), so reopening a simulation's
data folder continues it instead of planting the seeds twice. Whether the event spread is a question for each
resident's own memory: `knows_of` retrieves with the event's text and looks for the host's invitation or a
conversation that carried it.
"""

from __future__ import annotations

import re
from pathlib import Path

from ragsvc.agents.memory import MemoryStream, RetrievalOptions
from ragsvc.agents.persona import Town
from ragsvc.embed.embedder import Embedder
from ragsvc.store.memories import MemoryTables, NewMemory

SEED_IMPORTANCE = 5.0
"""Importance given to seed memories (who one is matters, but is not news); the event gets EVENT_IMPORTANCE."""
EVENT_IMPORTANCE = 7.0


def index_folder(root: Path, name: str) -> Path:
    """A resident's index folder under `root`, named from the persona's name."""
    return Path(root) / re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def open_town(tables: MemoryTables, town: Town, *, embedder: Embedder, index_root: Path | None = None,
              now_h: float = 0.0) -> dict[str, MemoryStream]:
    """One stream per resident (by name), seeded on first open."""
    streams = {}
    for persona in town.residents:
        folder = None if index_root is None else index_folder(index_root, persona.name)
        stream = MemoryStream(tables, persona.name, embedder=embedder, index_dir=folder)
        if len(stream) == 0:
            seeds = [NewMemory(kind="observation", text=m, created_h=now_h, importance=SEED_IMPORTANCE)
                     for m in persona.memories]
            if town.event is not None and town.event.host == persona.name:
                seeds.append(NewMemory(kind="observation", text=town.event.text, created_h=now_h,
                                       importance=EVENT_IMPORTANCE, metadata={"seeded_event": True}))
            stream.add_many(seeds)
        streams[persona.name] = stream
    return streams


def knows_of(stream: MemoryStream, town: Town, *, now_h: float, keyword: str) -> bool:
    """Whether one of the resident's best memories about the town's event mentions `keyword` (e.g. "party").
    Read-only: asking does not count as remembering."""
    if town.event is None:
        return False
    found = stream.retrieve(town.event.text, now_h=now_h, options=RetrievalOptions(k=5, mark_accessed=False))
    return any(keyword.lower() in m.memory.text.lower() for m in found.memories)
