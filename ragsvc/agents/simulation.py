"""Running a town's simulation into a folder, resumably, and opening a finished (or interrupted) run.

The folder is a ragsvc data folder: `catalog.duckdb` holds the residents' memory streams and the run's state
(store/simulation.py), `town/` a copy of the town's TOML files (so the run opens without the original), and
`transcript.jsonl` / `trace.jsonl` are derived from the catalog.

Resuming. Each tick runs inside one catalog transaction (`MemoryTables.atomic()`): its memories, the access
times its retrievals moved, its transcript rows and its tick record (with every agent's state after it)
commit together. A run stopped by Ctrl-C or kill -9 has committed whole ticks only; running the same command
again reopens the catalog, rebuilds each agent's index from it (the indexes are in memory, never on disk, so
nothing can be ahead of the catalog), restores the agents' state from the last tick record and goes on from the
next tick. The JSONL files are rewritten from the catalog on every open and appended after every commit, so
a kill between a commit and its append loses nothing and a resume duplicates nothing. A folder holding another
town or other options (store/simulation.py's fingerprint) is refused.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

from ragsvc.agents.memory import MemoryStream
from ragsvc.agents.persona import Town, load_town
from ragsvc.agents.sim_calls import PhaseCaller
from ragsvc.agents.sim_config import SimulationConfig, clock_text, event_keyword, fingerprint, town_digest
from ragsvc.agents.sim_social import converse_phase, importance_phase, reflect_phase
from ragsvc.agents.sim_state import AgentState, initial_states, town_preamble
from ragsvc.agents.sim_tick import Tick, World
from ragsvc.agents.town import open_town
from ragsvc.embed.embedder import Embedder
from ragsvc.errors import Conflict, InvalidInput, NotFound
from ragsvc.llm.generator import Generator
from ragsvc.store.catalog import Catalog
from ragsvc.store.memories import MemoryTables
from ragsvc.store.simulation import RunRecord, SimulationTables, TickRecord

CATALOG_FILE = "catalog.duckdb"
TRANSCRIPT_FILE = "transcript.jsonl"
TRACE_FILE = "trace.jsonl"
TOWN_FOLDER = "town"
Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class RunSummary:
    path: Path
    first_tick: int
    """0 for a new run; the tick a resumed run started from."""
    ticks_done: int
    """Committed ticks in the folder after this call."""
    num_ticks: int
    num_agents: int
    wall_s: float
    """Time spent running ticks in this call."""


class RunStreams(dict[str, MemoryStream]):
    """The residents' memory streams by name, over the run's open catalog; `close()` releases both."""

    def __init__(self, streams: Mapping[str, MemoryStream], catalog: Catalog) -> None:
        super().__init__(streams)
        self.catalog = catalog

    def close(self) -> None:
        for stream in self.values():
            stream.close()
        self.catalog.close()


class OpenedRun(NamedTuple):
    """A run's town, its residents' memory streams and its transcript (see `open_run`)."""

    town: Town
    streams: RunStreams
    transcript: list[dict[str, Any]]


def open_run(path: Path, *, embedder: Embedder | None = None) -> OpenedRun:
    """Open a simulation folder written by `run_simulation` (finished, or interrupted: its committed ticks).

    Returns `(town, streams, transcript)`; `streams.close()` closes the catalog when done. `embedder` must be
    the one the run used (default: the default MiniLM embedder; a different one is refused).

    Transcript rows (dicts, in order; one per agent action):
        tick        0-based tick number
        time_h      simulation hours since day 1 00:00 (8.25 = day 1, 08:15)
        clock       the same as text, "day 1 08:15"
        agent       the resident's name
        action      "plan" (day plan written; utterance = its steps), "act" (what the agent does this tick;
                    one per agent per tick), "observe" (saw another resident; memory_ids = the observation),
                    "react" (decided to react; utterance = the new activity), "say" (one utterance of a
                    conversation; partner = the listener), "learned_event" (first heard of the seeded event;
                    partner = who told them, utterance = what was said, memory_ids = the chat memory),
                    "reflect" (an insight; memory_ids = its evidence)
        location    the place the agent is at
        utterance   the text of the action ("" when none)
        partner     the other resident ("" when none)
        memory_ids  memories the action used (retrieved context, evidence) or wrote (observation, chat)
    The seeded event's host knows of it from the start; `learned_event` rows say who else learned of it, when
    and from whom; "say" rows say who talked with whom.
    """
    root = Path(path)
    if not (root / CATALOG_FILE).is_file():
        raise NotFound(f"{root} holds no simulation (no {CATALOG_FILE}); pass the --out folder of `ragsvc agents run`")
    catalog = Catalog(root / CATALOG_FILE)
    try:
        sim = catalog.simulation_tables()
        record = sim.run()
        if record is None:
            raise NotFound(f"{root} is a ragsvc data folder but holds no simulation run")
        town = load_town(root / TOWN_FOLDER)
        if embedder is None:
            from ragsvc.embed.embedder import SentenceTransformerEmbedder

            embedder = SentenceTransformerEmbedder()
        _check_embedder(record, embedder)
        tables = catalog.memory_tables()
        streams = {p.name: MemoryStream(tables, p.name, embedder=embedder) for p in town.residents}
        return OpenedRun(town, RunStreams(streams, catalog), sim.transcript())
    except BaseException:
        catalog.close()
        raise


def _check_embedder(record: RunRecord, embedder: Embedder) -> None:
    used = record.config.get("embedder", "")
    if used and used != embedder.id:
        raise InvalidInput(f"the run's memories were embedded with {used!r}, not {embedder.id!r}; open it with "
                           "that embedder")


def check_out(town_dir: Path, out: Path, *, config: SimulationConfig, embedder_id: str) -> None:
    """Refuse `out` before any model is loaded when it cannot take this run (see `run_simulation`)."""
    out = Path(out)
    _check_folder(out)
    if not (out / CATALOG_FILE).is_file():
        return
    catalog = Catalog(out / CATALOG_FILE)
    try:
        sim = catalog.simulation_tables()
        config = replace(config, embedder=embedder_id)
        _check_same(out, sim, catalog.memory_tables().count(), _record(load_town(Path(town_dir)), config, town_dir))
    finally:
        catalog.close()


def _record(town: Town, config: SimulationConfig, town_dir: Path) -> RunRecord:
    sha = town_digest(Path(town_dir))
    return RunRecord(town=town.name, fingerprint=fingerprint(config, sha),
                     config={**config.identity(), "town_sha": sha})


def run_simulation(town_dir: Path, out: Path, *, config: SimulationConfig, generator: Generator,
                   embedder: Embedder, progress: Progress | None = None, stop_after: int | None = None) -> RunSummary:
    """Run (or resume) `town_dir`'s simulation into `out` up to `config.num_ticks` ticks. `stop_after` ends this
    call after that many ticks (an interruption, for tests)."""
    town = load_town(Path(town_dir))
    config = _with_embedder(config, embedder)
    out = Path(out)
    _check_folder(out)
    catalog = Catalog(out / CATALOG_FILE)
    streams: Mapping[str, MemoryStream] = {}
    try:
        sim, tables = catalog.simulation_tables(), catalog.memory_tables()
        record = _record(town, config, Path(town_dir))
        if not _check_same(out, sim, tables.count(), record):
            _copy_town(Path(town_dir), out / TOWN_FOLDER)
            sim.create_run(record)
        with tables.atomic():
            streams = open_town(tables, town, embedder=embedder, now_h=config.start_h)
        last = sim.last_tick()
        sim.drop_after(last.tick if last is not None else -1)
        states = ({a: AgentState.from_json(s) for a, s in last.state.items()} if last is not None
                  else initial_states(town))
        first = last.tick + 1 if last is not None else 0
        _rewrite_jsonl(out, sim)
        world = World(town=town, personas={p.name: p for p in town.residents}, streams=streams, config=config,
                      preamble=town_preamble(town), keyword=event_keyword(town.event.text, town.event.place)
                      if town.event is not None else "")
        caller = PhaseCaller(generator, sequential=config.sequential, max_calls_per_agent=config.max_calls_per_agent,
                             max_tokens_per_agent=config.max_tokens_per_agent, seed=config.seed,
                             prime=config.prime_prefix)
        if progress is not None:
            progress(first, config.num_ticks)
        started = time.perf_counter()
        end = config.num_ticks if stop_after is None else min(config.num_ticks, first + stop_after)
        for tick in range(first, end):
            _commit_tick(out, world, caller, states, tick, sim, tables)
            if progress is not None:
                progress(tick + 1, config.num_ticks)
        done = sim.last_tick()
        return RunSummary(path=out, first_tick=first, ticks_done=0 if done is None else done.tick + 1,
                          num_ticks=config.num_ticks, num_agents=len(town.residents),
                          wall_s=round(time.perf_counter() - started, 3))
    finally:
        for stream in streams.values():
            stream.close()
        catalog.close()


def run_tick(t: Tick) -> list[dict[str, Any]]:
    """Every phase of one tick, in order; returns its transcript rows."""
    t.plan_phase()
    t.blocks_phase()
    t.act_phase()
    company = t.observe_phase()
    reacted = t.decide_phase(company)
    converse_phase(t, company, reacted)
    if t.world.config.reflection:
        reflect_phase(t)
    importance_phase(t)
    return t.rows


def _commit_tick(out: Path, world: World, caller: PhaseCaller, states: dict[str, AgentState], tick: int,
                 sim: SimulationTables, tables: MemoryTables) -> None:
    caller.start_tick()
    started = time.perf_counter()
    with tables.atomic():
        t = Tick(world, caller, states, tick)
        rows = run_tick(t)
        u = caller.usage
        trace = {"tick": tick, "time_h": round(t.time_h, 4), "clock": clock_text(t.time_h),
                 "agent_steps": len(world.personas), "calls": u.calls, "batches": u.batches,
                 "prompt_tokens": u.prompt_tokens, "cached_prompt_tokens": u.cached_tokens,
                 "completion_tokens": u.completion_tokens, "model_ms": round(u.model_ms, 1),
                 "primes": u.primes, "prime_prompt_tokens": u.prime_prompt_tokens,
                 "wall_ms": round((time.perf_counter() - started) * 1000.0, 1),
                 "calls_by_phase": dict(sorted(u.by_phase.items())),
                 "model_ms_by_phase": {k: round(v, 1) for k, v in sorted(u.ms_by_phase.items())},
                 "batch_sizes_by_phase": dict(sorted(u.sizes_by_phase.items())),
                 "tokens_by_phase": dict(sorted(u.tokens_by_phase.items())),
                 "critical_ms_by_phase": {k: round(v, 1) for k, v in sorted(u.critical_ms_by_phase.items())},
                 "mode": "sequential" if caller.sequential else "batched"}
        state = {a: s.to_json() for a, s in sorted(states.items())}
        sim.write_tick(TickRecord(tick=tick, time_h=t.time_h, state=state, trace=trace), rows)
    _append_jsonl(out / TRANSCRIPT_FILE, rows)
    _append_jsonl(out / TRACE_FILE, [trace])


def _with_embedder(config: SimulationConfig, embedder: Embedder) -> SimulationConfig:
    return replace(config, embedder=embedder.id)


def _check_folder(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise InvalidInput(f"--out {out} is a file; give a folder (new, empty, or an earlier run's)")
    if out.is_dir() and any(out.iterdir()) and not (out / CATALOG_FILE).is_file():
        raise Conflict(f"--out {out} is a non-empty folder that holds no simulation; give a new or empty folder, "
                       "or an earlier run's folder to resume it")


def _check_same(out: Path, sim: SimulationTables, num_memories: int, record: RunRecord) -> bool:
    """True when `out` holds this run (resume), False when it holds none yet; Conflict for anything else."""
    existing = sim.run()
    if existing is None:
        if num_memories:
            raise Conflict(f"--out {out} is a ragsvc data folder with memories but no simulation run; give a new "
                           "or empty folder")
        return False
    if existing.fingerprint != record.fingerprint:
        differs = sorted(k for k in {*existing.config, *record.config}
                         if existing.config.get(k) != record.config.get(k))
        raise Conflict(f"--out {out} holds another run (town {existing.town!r}; differs in: {', '.join(differs)}); "
                       "rerun with that run's town and options to resume it, or give another --out folder")
    return True


def _copy_town(town_dir: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(town_dir.glob("*.toml")):
        shutil.copyfile(path, target / path.name)


def _rewrite_jsonl(out: Path, sim: SimulationTables) -> None:
    """The JSONL files from the catalog's committed ticks (written to a temporary name, then renamed)."""
    for name, rows in ((TRANSCRIPT_FILE, sim.transcript()), (TRACE_FILE, [t.trace for t in sim.ticks()])):
        tmp = out / f".{name}.tmp"
        with tmp.open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(dict(r), sort_keys=True) + "\n" for r in rows)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(out / name)


def _append_jsonl(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.writelines(json.dumps(dict(r), sort_keys=True) + "\n" for r in rows)
