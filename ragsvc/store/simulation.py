"""A generative-agent simulation's run state in the catalog: the run's identity, each committed tick (the agents'
state after it and its trace) and the transcript rows it produced. Only SQL lives here.

A tick's record is its commit marker: `write_tick` inserts the transcript rows first and the tick row last, and
readers only return rows of ticks that have a tick row. The runner calls it inside `MemoryTables.atomic()`, so
the tick's memories, access times, transcript and record commit together; even outside one, a tick killed half
way shows nothing, and `drop_after` clears its leftovers before the tick is run again.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb

RUN_KEY = "run"
"""A data folder holds one run; its row has this key."""


@dataclass(frozen=True, slots=True)
class RunRecord:
    town: str
    fingerprint: str
    """Hash of the town's files and the run's options: a folder of another run is refused."""
    config: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class TickRecord:
    tick: int
    time_h: float
    state: Mapping[str, Any]
    """The agents' state after the tick (what the next tick starts from)."""
    trace: Mapping[str, Any]


class SimulationTables:
    """Run and tick records through a catalog's connection and lock."""

    def __init__(self, conn: duckdb.DuckDBPyConnection, lock: threading.RLock) -> None:
        self._conn = conn
        self._lock = lock

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._conn.execute(sql, list(params)).fetchall()

    def run(self) -> RunRecord | None:
        rows = self._rows("SELECT town, fingerprint, config FROM sim_run WHERE key = ?", [RUN_KEY])
        if not rows:
            return None
        return RunRecord(town=rows[0][0], fingerprint=rows[0][1], config=json.loads(rows[0][2]))

    def create_run(self, record: RunRecord) -> None:
        self._rows("INSERT INTO sim_run VALUES (?, ?, ?, ?)",
                   [RUN_KEY, record.town, record.fingerprint, json.dumps(dict(record.config), sort_keys=True)])

    def write_tick(self, record: TickRecord, rows: Sequence[Mapping[str, Any]]) -> None:
        """The tick's transcript rows, then its record (the marker that makes them visible)."""
        with self._lock:
            for seq, row in enumerate(rows):
                self._conn.execute("INSERT INTO sim_transcript VALUES (?, ?, ?)",
                                   [record.tick, seq, json.dumps(dict(row), sort_keys=True)])
            self._conn.execute("INSERT INTO sim_ticks VALUES (?, ?, ?, ?)",
                               [record.tick, record.time_h, json.dumps(dict(record.state), sort_keys=True),
                                json.dumps(dict(record.trace), sort_keys=True)])

    def drop_after(self, tick: int) -> None:
        """Forget transcript rows of ticks after `tick` (left by a tick that never committed)."""
        self._rows("DELETE FROM sim_transcript WHERE tick > ?", [tick])

    def last_tick(self) -> TickRecord | None:
        rows = self._rows("SELECT tick, time_h, state, trace FROM sim_ticks ORDER BY tick DESC LIMIT 1")
        return _tick(rows[0]) if rows else None

    def ticks(self) -> list[TickRecord]:
        return [_tick(r) for r in self._rows("SELECT tick, time_h, state, trace FROM sim_ticks ORDER BY tick")]

    def transcript(self) -> list[dict[str, Any]]:
        """Every committed tick's transcript rows, in order."""
        rows = self._rows("SELECT t.row FROM sim_transcript t JOIN sim_ticks k ON t.tick = k.tick "
                          "ORDER BY t.tick, t.seq")
        return [json.loads(r[0]) for r in rows]


def _tick(row: tuple[Any, ...]) -> TickRecord:
    return TickRecord(tick=int(row[0]), time_h=float(row[1]), state=json.loads(row[2]), trace=json.loads(row[3]))
