"""Response bodies of the simulation routes (api/routes/simulations.py)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from ragsvc.agents.sim_runs import RunInfo, TranscriptPage
from ragsvc.store.simulation import TranscriptRow


class SimulationPublic(BaseModel):
    name: str = Field(description="the run's folder name under the runs root")
    state: Literal["ready", "busy", "broken"] = Field(
        description="ready: readable; busy: a process is writing it (read it when that stops); broken: not a "
                    "readable run (see detail)")
    modified: float = Field(description="when its catalog last changed, seconds since the epoch")
    town: str | None = None
    config: dict[str, Any] | None = Field(None, description="the run's options (seed, tick minutes, model, ...)")
    num_ticks: int = Field(0, description="committed ticks")
    last_time_h: float | None = Field(None, description="simulation hours at the last committed tick")
    num_rows: int = Field(0, description="transcript rows of the committed ticks")
    agents: list[str] = Field(default_factory=list, description="residents that acted, by name")
    detail: str | None = None

    @classmethod
    def of(cls, info: RunInfo) -> SimulationPublic:
        return cls(name=info.name, state=info.state, modified=info.modified, town=info.town,
                   config=None if info.config is None else dict(info.config), num_ticks=info.num_ticks,
                   last_time_h=info.last_time_h, num_rows=info.num_rows, agents=list(info.agents),
                   detail=info.detail)


class TranscriptRowPublic(BaseModel):
    tick: int = Field(description="0-based tick")
    seq: int = Field(description="the row's place within its tick")
    time_h: float = Field(description="simulation hours since day 1 00:00")
    clock: str = Field(description='the same as text, "day 1 08:15"')
    agent: str
    action: str = Field(description="plan, act, observe, react, say, learned_event or reflect")
    location: str = ""
    utterance: str = ""
    partner: str = ""
    memory_ids: list[int] = Field(default_factory=list, description="memories the action used or wrote (the "
                                  "acting agent's; GET .../memories?agent=&ids= shows them)")

    @classmethod
    def of(cls, row: TranscriptRow) -> TranscriptRowPublic:
        data = row.row
        return cls(tick=row.tick, seq=row.seq, time_h=float(data.get("time_h", 0.0)),
                   clock=str(data.get("clock", "")), agent=str(data.get("agent", "")),
                   action=str(data.get("action", "")), location=str(data.get("location", "")),
                   utterance=str(data.get("utterance", "")), partner=str(data.get("partner", "")),
                   memory_ids=[int(i) for i in data.get("memory_ids", [])])


class TranscriptPagePublic(BaseModel):
    run: str
    rows: list[TranscriptRowPublic]
    next_after_tick: int | None = Field(description="pass as after_tick (with next_after_seq) for the next page; "
                                                    "null: no more committed rows yet")
    next_after_seq: int | None = None

    @classmethod
    def of(cls, page: TranscriptPage) -> TranscriptPagePublic:
        after = page.next_after
        return cls(run=page.run, rows=[TranscriptRowPublic.of(r) for r in page.rows],
                   next_after_tick=None if after is None else after[0],
                   next_after_seq=None if after is None else after[1])
