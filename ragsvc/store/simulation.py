"""A generative-agent simulation's run state in the catalog: the run's identity, each committed tick (the agents'
state after it and its trace) and the transcript rows it produced. Only SQL lives here.

A tick's record is its commit marker: `write_tick` inserts the transcript rows first and the tick row last, and
readers only return rows of ticks that have a tick row. The runner calls it inside `MemoryTables.atomic()`, so
the tick's memories, access times, transcript and record commit together; even outside one, a tick killed half
way shows nothing, and `drop_after` clears its leftovers before the tick is run again.

`RunReader` opens a run read-only for another process (the API's transcript pages and memory look-ups).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from ragsvc.errors import Conflict, InvalidInput, NotFound
from ragsvc.store.memories import MemoryTables

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


@dataclass(frozen=True, slots=True)
class TranscriptRow:
    """One committed transcript row and its place: rows are ordered by (tick, seq)."""

    tick: int
    seq: int
    row: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class RunStats:
    num_ticks: int
    """Committed ticks."""
    last_time_h: float | None
    num_rows: int
    agents: tuple[str, ...]
    """Every agent that acted in a committed row, by name."""


class RunReader:
    """Reads a finished or interrupted run's catalog through a read-only connection, for a process that did not
    write it (the API). It never creates tables or writes, so opening a folder can change nothing in it; a run
    that is being written holds duckdb's file lock, and opening it is a Conflict until that process stops."""

    def __init__(self, path: Path) -> None:
        try:
            self._conn = duckdb.connect(str(path), read_only=True)
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise Conflict(f"the run is being written by another process ({exc}); its transcript is "
                               "readable once that process stops") from exc
            raise InvalidInput(f"cannot open the run's catalog: {exc}") from exc
        except duckdb.Error as exc:
            raise InvalidInput(f"cannot open the run's catalog: {exc}") from exc
        self._lock = threading.RLock()
        self.tables = SimulationTables(self._conn, self._lock)
        self.memories = MemoryTables(self._conn, self._lock)

    def __enter__(self) -> RunReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            with self._lock:
                return self._conn.execute(sql, list(params)).fetchall()
        except duckdb.CatalogException as exc:  # a data folder without simulation tables
            raise NotFound("the folder's catalog holds no simulation tables") from exc

    def run(self) -> RunRecord | None:
        try:
            return self.tables.run()
        except duckdb.CatalogException:
            return None

    def stats(self) -> RunStats:
        ticks = self._rows("SELECT count(*), max(time_h) FROM sim_ticks")[0]
        agents = self._rows(f"SELECT DISTINCT json_extract_string(t.row, '$.agent') AS a {_COMMITTED} ORDER BY a")
        rows = self._rows(f"SELECT count(*) {_COMMITTED}")[0][0]
        return RunStats(num_ticks=int(ticks[0]), last_time_h=None if ticks[1] is None else float(ticks[1]),
                        num_rows=int(rows), agents=tuple(str(a[0]) for a in agents if a[0] is not None))

    def transcript_page(self, *, after: tuple[int, int], limit: int, agent: str | None = None,
                        up_to_tick: int | None = None) -> list[TranscriptRow]:
        """Up to `limit` committed rows after position `after` = (tick, seq), in order; only `agent`'s own rows
        (the rows it acted in) when given, only ticks up to `up_to_tick` when given."""
        sql = f"SELECT t.tick, t.seq, t.row {_COMMITTED} AND (t.tick > ? OR (t.tick = ? AND t.seq > ?))"
        params: list[Any] = [int(after[0]), int(after[0]), int(after[1])]
        if agent is not None:
            sql, params = sql + " AND json_extract_string(t.row, '$.agent') = ?", [*params, agent]
        if up_to_tick is not None:
            sql, params = sql + " AND t.tick <= ?", [*params, int(up_to_tick)]
        rows = self._rows(sql + " ORDER BY t.tick, t.seq LIMIT ?", [*params, int(limit)])
        return [TranscriptRow(tick=int(r[0]), seq=int(r[1]), row=json.loads(r[2])) for r in rows]


_COMMITTED = "FROM sim_transcript t JOIN sim_ticks k ON t.tick = k.tick WHERE true"
"""Transcript rows of committed ticks only (a tick's record is its commit marker)."""
