"""One simulation tick, phase by phase. Each phase first builds every agent's prompt, then sends them all in one
`PhaseCaller.call` (one generate_many), then applies the replies: that split is what lets continuous batching
serve the five agents' plans, or their decisions, as one batch instead of five queued calls.

    plan       a day plan for agents starting a day (planning off: the persona's routine; no call)
    blocks     the current broad step broken into hour blocks when an agent enters it
    act        what each agent does now and where (a transcript row per agent: the tick's agent-steps)
    observe    each agent sees who else is at its place (stored as observations, importance pending)
    decide     agents with company: continue or react? a reaction is spliced into the plan
    converse, reflect, importance: agents/sim_social.py

All randomness comes from a generator seeded by (seed, tick), and model calls are greedy, so the same seed and
town give the same transcript. The tick writes its memories through the streams; the runner wraps the whole
tick in one catalog transaction.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ragsvc.agents.memory import MemoryStream, RetrievalOptions
from ragsvc.agents.persona import Persona, Town
from ragsvc.agents.plan import DAY_MIN, PlanStep, fit_children, splice, step_at
from ragsvc.agents.plan_reader import read_plan
from ragsvc.agents.planning import day_plan_prompt, decompose_prompt, parse_decision, reaction_prompt, read_day_plan
from ragsvc.agents.sim_calls import PhaseCaller
from ragsvc.agents.sim_config import SimulationConfig, clock_text
from ragsvc.agents.sim_state import AgentState, location_of, with_prefix
from ragsvc.store.memories import MemoryRecord, NewMemory

PLAN_TOKENS = 192
LINE_TOKENS = 16
"""Room for one "HH:MM-HH:MM activity" line."""
DECIDE_TOKENS = 32
DECIDE_STOP = ("\n",)
"""A decision is one line ('continue' or 'react: ...'); what a small model writes after it (the prompt copied
back, more options) is never read, and in a batch the longest reply sets how many steps the batch takes."""
CONTEXT_MEMORIES = 6
EVENT_HOURS = 3.0
"""How long agents who know of the seeded event spend at it."""


def decompose_tokens(parent: PlanStep) -> int:
    """The budget of an hour-block decomposition of `parent`: a line per half hour of it (parts are 15 to 60
    minutes) and a little over, at most PLAN_TOKENS. A small model that loops (one time repeated, prose that
    goes on) is cut where a sound reply would have ended; fit_children fills what a cut reply leaves out."""
    return min(PLAN_TOKENS, LINE_TOKENS * (2 + -(-parent.minutes // 30)))


@dataclass(frozen=True, slots=True)
class World:
    """What every tick of a run shares."""

    town: Town
    personas: Mapping[str, Persona]
    streams: Mapping[str, MemoryStream]
    config: SimulationConfig
    preamble: str
    keyword: str
    """The word that shows an utterance carried news of the seeded event ("party")."""


class Tick:
    """The state and transcript rows of one tick (`run` does the phases in order)."""

    def __init__(self, world: World, caller: PhaseCaller, states: Mapping[str, AgentState], tick: int) -> None:
        self.world, self.caller, self.states, self.tick = world, caller, states, tick
        self.time_h = world.config.time_h(tick)
        minutes = int(round(self.time_h * 60))
        self.day, self.minute = minutes // DAY_MIN + 1, minutes % DAY_MIN
        self.rng = random.Random(f"{world.config.seed}:{tick}")
        self.rows: list[dict[str, Any]] = []
        self.activity: dict[str, str] = {}
        self.step: dict[str, PlanStep | None] = {}
        self.names = sorted(world.personas)

    def row(self, agent: str, action: str, *, utterance: str = "", partner: str = "",
            memory_ids: Sequence[int] = ()) -> None:
        self.rows.append({"tick": self.tick, "time_h": round(self.time_h, 4), "clock": clock_text(self.time_h),
                          "agent": agent, "action": action, "location": self.states[agent].location,
                          "utterance": utterance, "partner": partner, "memory_ids": [int(i) for i in memory_ids]})

    def recall(self, agent: str, query: str, k: int = CONTEXT_MEMORIES) -> list[MemoryRecord]:
        stream = self.world.streams[agent]
        if len(stream) == 0:
            return []
        found = stream.retrieve(query, now_h=self.time_h, options=RetrievalOptions(k=k))
        return [m.memory for m in found.memories]

    def prompt(self, agent: str, messages: Sequence[Mapping[str, str]]) -> list[Mapping[str, str]]:
        return with_prefix(self.world.preamble, self.world.personas[agent], messages)

    def remember_plan(self, agent: str, steps: Sequence[PlanStep], *, reaction: bool = False) -> None:
        if steps:
            self.world.streams[agent].add_many([NewMemory(
                kind="plan", text=f"plan for day {self.day}: {s.clock()}", created_h=self.time_h,
                metadata={"day": self.day, "start_min": s.start_min, "end_min": s.end_min, "level": s.level,
                          "reaction": reaction}) for s in steps])

    # -- phases --------------------------------------------------------------------------------------------

    def plan_phase(self) -> None:
        starting = [a for a in self.names if self.states[a].day != self.day]
        plans: dict[str, list[PlanStep]] = {a: list(self.world.personas[a].routine) for a in starting}
        context: dict[str, list[MemoryRecord]] = {a: [] for a in starting}
        if self.world.config.planning and starting:
            requests = []
            for a in starting:
                context[a] = self.recall(a, f"plans and intentions of {a} for today")
                persona = self.world.personas[a]
                requests.append((a, self.prompt(a, day_plan_prompt(a, persona.describe(), context[a], self.day,
                                                                   persona.routine))))
            for a, reply in zip(starting, self.caller.call("plan", requests, max_tokens=PLAN_TOKENS), strict=True):
                if reply is not None:
                    plans[a] = read_day_plan(reply.text, plans[a])
        for a in starting:
            state = self.states[a]
            state.day, state.day_plan, state.blocks = self.day, plans[a], []
            self.remember_plan(a, plans[a])
            self.row(a, "plan", utterance="; ".join(s.clock() for s in plans[a]),
                     memory_ids=[m.id for m in context[a]])

    def blocks_phase(self) -> None:
        entering: list[tuple[str, PlanStep]] = []
        for a in self.names:
            state = self.states[a]
            broad = step_at(state.day_plan, self.minute)
            if broad is None or step_at(state.blocks, self.minute) is not None:
                continue
            if not self.world.config.planning:
                state.blocks = [broad]
                continue
            entering.append((a, broad))
        requests = [(a, self.prompt(a, decompose_prompt(a, broad, "hour"))) for a, broad in entering]
        budget = max((decompose_tokens(broad) for _, broad in entering), default=PLAN_TOKENS)  # one per batch
        replies = self.caller.call("blocks", requests, max_tokens=budget)
        for (a, broad), reply in zip(entering, replies, strict=True):
            children = fit_children(broad, read_plan(reply.text, level="hour") if reply else [], level="hour")
            self.states[a].blocks = children
            self.remember_plan(a, children)

    def act_phase(self) -> None:
        event = self.world.town.event
        for a in self.names:
            state, persona = self.states[a], self.world.personas[a]
            step = step_at(state.blocks, self.minute) or step_at(state.day_plan, self.minute)
            if event is not None and state.knows_event and self._at_event(event.day, event.start):
                text, place = f"attend the {self.world.keyword} at {event.place}", event.place
            elif step is None:
                text, place = "rest at home", persona.home or self.world.town.places[0].name
            else:
                text, place = step.text, location_of(step.text, persona, self.world.town)
            state.location = place
            self.activity[a], self.step[a] = text, step
            self.row(a, "act", utterance=text)

    def _at_event(self, day: int, start: str) -> bool:
        hours, minutes = (int(x) for x in start.split(":"))
        begins_h = (day - 1) * 24 + hours + minutes / 60
        return begins_h <= self.time_h < begins_h + EVENT_HOURS

    def observe_phase(self) -> dict[str, list[str]]:
        """Each agent's company (others at its place), stored as observations; returns the company."""
        company: dict[str, list[str]] = {}
        for a in self.names:
            place = self.states[a].location
            company[a] = [b for b in self.names if b != a and self.states[b].location == place]
            if not company[a]:
                continue
            seen = [NewMemory(kind="observation", text=f"{b} is at {place}: {self.activity[b]}",
                              created_h=self.time_h) for b in company[a]]
            ids = self.world.streams[a].add_many(seen)
            for memory, memory_id in zip(seen, ids, strict=True):
                self.row(a, "observe", utterance=memory.text, memory_ids=[int(memory_id)])
        return company

    def decide_phase(self, company: Mapping[str, list[str]]) -> dict[str, str]:
        """Continue or react, for agents with company (planning on); returns each reacting agent's new action."""
        if not self.world.config.planning:
            return {}
        deciding = [a for a in self.names if company[a]]
        seen = {a: "; ".join(f"{b} is here ({self.activity[b]})" for b in company[a]) for a in deciding}
        context = {a: self.recall(a, seen[a]) for a in deciding}
        requests = [(a, self.prompt(a, reaction_prompt(a, self.step[a], seen[a], context[a]))) for a in deciding]
        reacted: dict[str, str] = {}
        for a, reply in zip(deciding, self.caller.call("decide", requests, max_tokens=DECIDE_TOKENS,
                                                                 stop=DECIDE_STOP), strict=True):
            decision = parse_decision(reply.text) if reply is not None else None
            if decision is None or not decision.react:
                continue
            length = decision.minutes or 30
            reaction = PlanStep(self.minute, min(DAY_MIN, self.minute + max(5, min(length, 240))), decision.action,
                                "hour")
            state = self.states[a]
            state.blocks = splice(state.blocks, reaction)
            self.remember_plan(a, [reaction], reaction=True)
            reacted[a] = decision.action
            self.row(a, "react", utterance=decision.action, memory_ids=[m.id for m in context[a]])
        return reacted
