"""What a simulation carries from one tick to the next, per agent, as plain data that round-trips through JSON
(it is stored with each committed tick, which is what a resumed run starts from), and the world's pure rules:
where an activity takes place and which prompts every call of an agent starts with.

Prompt prefix. Every call of an agent opens with the same system message: the town (places and residents,
identical for everyone) and then the agent's persona. The engine's prefix cache serves those blocks from the
second call on, so the share of prompt tokens that needs computing is the part that changes (memories, the
question asked).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ragsvc.agents.persona import Persona, Town
from ragsvc.agents.plan import PlanStep
from ragsvc.llm.generator import Message


@dataclass(slots=True)
class AgentState:
    day: int = 0
    """The day `day_plan` is for (0: no plan yet)."""
    day_plan: list[PlanStep] = field(default_factory=list)
    blocks: list[PlanStep] = field(default_factory=list)
    """The current broad step broken into hour blocks (and reactions spliced in)."""
    location: str = ""
    knows_event: bool = False
    last_chat_h: dict[str, float] = field(default_factory=dict)
    """When this agent last talked with each partner."""
    reflected_through: int = 0
    """Newest memory id the last reflection attempt covered: importance counts from after it (and after the
    newest reflection), so a reflection the model could not write is not retried every tick."""

    def to_json(self) -> dict[str, Any]:
        return {"day": self.day, "day_plan": [_step(s) for s in self.day_plan],
                "blocks": [_step(s) for s in self.blocks], "location": self.location,
                "knows_event": self.knows_event, "last_chat_h": dict(sorted(self.last_chat_h.items())),
                "reflected_through": self.reflected_through}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AgentState:
        return cls(day=int(data["day"]), day_plan=[_unstep(s) for s in data["day_plan"]],
                   blocks=[_unstep(s) for s in data["blocks"]], location=str(data["location"]),
                   knows_event=bool(data["knows_event"]),
                   last_chat_h={k: float(v) for k, v in data["last_chat_h"].items()},
                   reflected_through=int(data["reflected_through"]))


def _step(s: PlanStep) -> list[Any]:
    return [s.start_min, s.end_min, s.text, s.level]


def _unstep(raw: Sequence[Any]) -> PlanStep:
    return PlanStep(int(raw[0]), int(raw[1]), str(raw[2]), raw[3])


def initial_states(town: Town) -> dict[str, AgentState]:
    """Everyone at home, no plan yet; the event's host knows of it."""
    host = town.event.host if town.event is not None else None
    return {p.name: AgentState(location=p.home or town.places[0].name, knows_event=p.name == host)
            for p in town.residents}


def town_preamble(town: Town) -> str:
    """The part of every prompt that is the same for every agent."""
    places = "; ".join(f"{p.name} ({p.kind})" for p in town.places)
    people = "\n".join(f"- {p.describe()}" for p in town.residents)
    return (f"This is a simulation of daily life in {town.name}, a small village.\nPlaces: {places}.\n"
            f"Residents:\n{people}\nAnswer as briefly as you are asked, in the form you are asked for.")


def with_prefix(preamble: str, persona: Persona, messages: Sequence[Message]) -> list[Message]:
    """`messages` after the shared system message: the town, then who this agent is."""
    system = f"{preamble}\n\nYou are {persona.name}. {persona.describe()}"
    return [{"role": "system", "content": system}, *messages]


def location_of(activity: str, persona: Persona, town: Town) -> str:
    """The place an activity happens at: a place named in it, else one whose kind it names ("the cafe"), else
    one a distinctive word of whose name it uses ("the bakery" for Berg Bakery; words of the town's own name
    do not count), else home (or the first place when the persona has none)."""
    lowered = activity.lower()
    words = set(re.findall(r"[a-z]+", lowered))
    town_words = set(re.findall(r"[a-z]+", town.name.lower()))
    for match in (lambda p: p.name.lower() in lowered,
                  lambda p: p.kind.lower() in words,
                  lambda p: any(len(w) >= 4 and w not in town_words and w in words
                                for w in re.findall(r"[a-z]+", p.name.lower()))):
        found = next((p.name for p in town.places if match(p)), None)
        if found is not None:
            return found
    return persona.home or town.places[0].name
