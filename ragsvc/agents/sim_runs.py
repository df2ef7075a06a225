"""The simulation runs a server shows: the run folders directly under one runs root, read without writing.

A run folder is what `run_simulation` writes (`ragsvc agents run --out FOLDER`, or `--name NAME` for a folder
under the configured runs root). Each request opens the run's catalog read-only and closes it again, so a
server never holds a run open: a run can be resumed, copied in or deleted while the server runs, and a run
being written right now (its writer holds duckdb's file lock) is listed as `busy` and answers 409 until its
writer stops. Run names are folder names checked against one pattern, so no request can reach outside the root.

Transcript pages are keyed by position (tick, seq): a page's `next` is the last row's position, and the next
page starts after it, so rows are neither skipped nor repeated however many rows one tick holds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ragsvc.config import StoreSettings
from ragsvc.errors import Conflict, InvalidInput, NotFound, RagsvcError
from ragsvc.store.memories import MemoryRecord
from ragsvc.store.simulation import RunReader, TranscriptRow

CATALOG_FILE = "catalog.duckdb"
"""The run's catalog inside its folder (agents/simulation.py writes it)."""
RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
RUN_NAME_PATTERN = RUN_NAME.pattern
MAX_RUNS = 500
"""Most run folders one listing looks at (in name order): each costs a catalog open."""
MAX_PAGE = 500
MAX_MEMORY_IDS = 100

RunState = Literal["ready", "busy", "broken"]


@dataclass(frozen=True, slots=True)
class RunInfo:
    name: str
    state: RunState
    """ready: readable; busy: a process is writing it; broken: not a readable run (see `detail`)."""
    modified: float
    """The catalog file's modification time (seconds since the epoch)."""
    town: str | None = None
    config: Mapping[str, Any] | None = None
    num_ticks: int = 0
    """Committed ticks."""
    last_time_h: float | None = None
    num_rows: int = 0
    agents: tuple[str, ...] = ()
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class TranscriptPage:
    run: str
    rows: tuple[TranscriptRow, ...]
    next_after: tuple[int, int] | None
    """The position to continue after; None when the page reached the end of the committed rows."""


def check_run_name(name: str) -> str:
    if not RUN_NAME.match(name):
        raise InvalidInput(f"run name {name[:80]!r} is not valid: 1-64 letters, digits, _ . - starting with a "
                           "letter or digit (the run's folder name under the runs root)")
    return name


class SimulationRuns:
    """The runs under `root` (which need not exist yet: then there are none)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def folder(self, name: str) -> Path:
        """The folder for run `name` under the root, whether or not it exists (for a writer to create)."""
        return self.root / check_run_name(name)

    def all(self, *, limit: int = MAX_RUNS) -> list[RunInfo]:
        if not self.root.is_dir():
            return []
        folders = sorted(p for p in self.root.iterdir() if RUN_NAME.match(p.name) and (p / CATALOG_FILE).is_file())
        return [self._info(p) for p in folders[: min(limit, MAX_RUNS)]]

    def get(self, name: str) -> RunInfo:
        return self._info(self._existing(name))

    def transcript(self, name: str, *, after: tuple[int, int] = (-1, -1), limit: int = 100,
                   agent: str | None = None, up_to_tick: int | None = None) -> TranscriptPage:
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"limit must be 1-{MAX_PAGE}, got {limit}")
        with self._open(name) as reader:
            rows = reader.transcript_page(after=after, limit=limit + 1, agent=agent, up_to_tick=up_to_tick)
        page = rows[:limit]
        more = len(rows) > limit
        return TranscriptPage(run=name, rows=tuple(page),
                              next_after=(page[-1].tick, page[-1].seq) if more and page else None)

    def memories(self, name: str, *, agent: str, ids: Sequence[int]) -> list[MemoryRecord]:
        """`agent`'s memories with these ids in the run, in the order asked; ids it does not hold are left out."""
        if len(ids) > MAX_MEMORY_IDS:
            raise InvalidInput(f"at most {MAX_MEMORY_IDS} memory ids per request, got {len(ids)}")
        with self._open(name) as reader:
            return reader.memories.get(agent, list(ids))

    def _existing(self, name: str) -> Path:
        folder = self.folder(name)
        if not (folder / CATALOG_FILE).is_file():
            raise NotFound(f"no simulation run {name!r}; GET /v1/simulations lists the runs under the server's runs "
                           "root (`ragsvc agents run --name NAME` writes one there)")
        return folder

    def _open(self, name: str) -> RunReader:
        reader = RunReader(self._existing(name) / CATALOG_FILE)
        if reader.run() is None:
            reader.close()
            raise NotFound(f"{name!r} is a ragsvc data folder but holds no simulation run")
        return reader

    def _info(self, folder: Path) -> RunInfo:
        modified = (folder / CATALOG_FILE).stat().st_mtime
        try:
            with RunReader(folder / CATALOG_FILE) as reader:
                record, stats = reader.run(), reader.stats()
        except Conflict as exc:
            return RunInfo(name=folder.name, state="busy", modified=modified, detail=exc.message)
        except RagsvcError as exc:
            return RunInfo(name=folder.name, state="broken", modified=modified, detail=exc.message)
        if record is None:
            return RunInfo(name=folder.name, state="broken", modified=modified, detail="holds no simulation run")
        return RunInfo(name=folder.name, state="ready", modified=modified, town=record.town,
                       config=dict(record.config), num_ticks=stats.num_ticks, last_time_h=stats.last_time_h,
                       num_rows=stats.num_rows, agents=stats.agents)


def runs_root(store: StoreSettings) -> Path:
    """The configured runs root: `store.simulations_dir`, else `simulations/` inside the data folder."""
    return store.simulations_dir or store.data_dir / "simulations"
