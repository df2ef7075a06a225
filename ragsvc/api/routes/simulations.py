"""Simulation runs and their transcripts, read-only: what the console's timeline shows.

GET /v1/simulations                         the runs under the server's runs root (ready, busy or broken)
GET /v1/simulations/{run}                   one run: town, options, committed ticks, agents
GET /v1/simulations/{run}/transcript        a page of its committed transcript rows, in (tick, seq) order
    ?agent=NAME        only rows NAME acted in
    ?after_tick=T      rows after tick T (with after_seq=S: after row S of tick T, as a page's next_* say)
    ?up_to_tick=T      only ticks up to T
    ?limit=N           1-500 rows (default 100)
GET /v1/simulations/{run}/memories?agent=NAME&ids=1&ids=2   the memories a row's memory_ids name

The runs root is `store.simulations_dir` (RAGSVC_STORE__SIMULATIONS_DIR; default `<data dir>/simulations`);
`ragsvc agents run --name NAME` writes a run there, and any run folder copied there is served too. Each request
opens the run read-only (agents/sim_runs.py): a run still being written answers 409 until its writer stops.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from pydantic import Field

from ragsvc.agents.sim_runs import MAX_MEMORY_IDS, MAX_PAGE, MAX_RUNS, RUN_NAME_PATTERN, SimulationRuns, runs_root
from ragsvc.api.agent_schemas import MemoryPublic
from ragsvc.api.parsed_body import ParsedBodyRoute
from ragsvc.api.simulation_schemas import SimulationPublic, TranscriptPagePublic

router = APIRouter(prefix="/v1/simulations", tags=["simulations"], route_class=ParsedBodyRoute)
AFTER_WHOLE_TICK = 2**31 - 1
"""after_seq when absent: past every row of after_tick."""

RunName = Annotated[str, Path(pattern=RUN_NAME_PATTERN, max_length=64, description="the run's folder name")]
MemoryId = Annotated[int, Field(ge=0, le=2**63 - 1)]
AgentName = Annotated[str, Query(min_length=1, max_length=200, description="a resident's name")]


def _runs(request: Request) -> SimulationRuns:
    return SimulationRuns(runs_root(request.app.state.settings.store))


@router.get("", response_model=list[SimulationPublic])
def list_simulations(request: Request,
                     limit: Annotated[int, Query(ge=1, le=MAX_RUNS)] = 100) -> list[SimulationPublic]:
    return [SimulationPublic.of(info) for info in _runs(request).all(limit=limit)]


@router.get("/{run}", response_model=SimulationPublic)
def get_simulation(request: Request, run: RunName) -> SimulationPublic:
    return SimulationPublic.of(_runs(request).get(run))


@router.get("/{run}/transcript", response_model=TranscriptPagePublic)
def get_transcript(
    request: Request,
    run: RunName,
    agent: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    after_tick: Annotated[int, Query(ge=-1, le=AFTER_WHOLE_TICK)] = -1,
    after_seq: Annotated[int | None, Query(ge=-1, le=AFTER_WHOLE_TICK)] = None,
    up_to_tick: Annotated[int | None, Query(ge=0, le=AFTER_WHOLE_TICK)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> TranscriptPagePublic:
    after = (after_tick, AFTER_WHOLE_TICK if after_seq is None else after_seq)
    page = _runs(request).transcript(run, after=after, limit=limit, agent=agent, up_to_tick=up_to_tick)
    return TranscriptPagePublic.of(page)


@router.get("/{run}/memories", response_model=list[MemoryPublic])
def get_run_memories(
    request: Request,
    run: RunName,
    agent: AgentName,
    ids: Annotated[list[MemoryId], Query(min_length=1, max_length=MAX_MEMORY_IDS, description="memory ids")],
) -> list[MemoryPublic]:
    return [MemoryPublic.of(m) for m in _runs(request).memories(run, agent=agent, ids=ids)]
