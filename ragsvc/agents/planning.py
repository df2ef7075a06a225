"""Planning with the model: a day plan in broad strokes, decomposed into hour blocks and then 5-15 minute
actions; each observation asks "continue or react?", and a reaction re-plans the rest of the day from that
moment. Plans are memories too (kind "plan", with their span in the metadata), so retrieval and reflection see
what the agent meant to do.

Every step here makes a fixed number of model calls with a token budget, and falls back to something sound
when the reply is unusable: the persona's routine for a day plan (or for the part of the day the reply leaves
out), an even split for a decomposition, "continue" for a decision. Replies are read tolerantly
(agents/plan_reader.py: bullets, 12-hour times, missing end times); the shape of a plan is enforced by
agents/plan.py, not trusted to the model.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ragsvc.agents.memory import MemoryStream, RetrievalOptions
from ragsvc.agents.plan import LIMITS, Level, PlanStep, fit_children, hhmm, splice
from ragsvc.agents.plan_reader import DAY_STEPS, day_plan_from, read_plan
from ragsvc.errors import InvalidInput
from ragsvc.llm.generator import Generator, Message
from ragsvc.store.memories import MemoryRecord, NewMemory


@dataclass(frozen=True, slots=True)
class PlanningOptions:
    max_tokens: int = 384
    """Budget of each planning generation."""
    context_memories: int = 8
    """Memories retrieved to condition a plan or a decision."""
    reaction_min: int = 30
    """How long a reaction lasts when the model does not say."""

    def __post_init__(self) -> None:
        if not 16 <= self.max_tokens <= 4096:
            raise InvalidInput(f"planning max_tokens must be in [16, 4096], got {self.max_tokens}")
        if not 0 <= self.context_memories <= 100 or not 5 <= self.reaction_min <= 240:
            raise InvalidInput("context_memories must be in [0, 100] and reaction_min in [5, 240]")


@dataclass(frozen=True, slots=True)
class Decision:
    react: bool
    action: str = ""
    """The new activity when reacting."""
    minutes: int | None = None


def day_plan_prompt(agent: str, summary: str, memories: Sequence[MemoryRecord], day: int,
                    routine: Sequence[PlanStep] = ()) -> list[Message]:
    """The day-plan request. With `routine`, the persona's usual day is shown in the form asked for and the
    reply is begun with its first line (an assistant turn the model continues, `day_plan_start`): a 135M model
    asked only to write "HH:MM-HH:MM activity" lines writes prose or untimed bullets, but continues a started
    list in its form, changing what it has reason to change. Read the reply with `read_day_plan`."""
    remembered = "\n".join(f"- {m.text}" for m in memories) or "- (nothing yet)"
    usual = "".join(f"{s.clock()}\n" for s in routine)
    messages: list[Message] = [{"role": "user", "content": (
        f"{summary}\nWhat {agent} remembers:\n{remembered}\n\n"
        + (f"{agent}'s usual day:\n{usual}\n" if usual else "")
        + f"Write {agent}'s plan for day {day} in {DAY_STEPS[0]} to {DAY_STEPS[1]} broad strokes, one per line, "
        "as HH:MM-HH:MM activity (24-hour clock), in order, from waking up to going to sleep.")}]
    if routine:
        messages.append({"role": "assistant", "content": day_plan_start(routine)})
    return messages


def day_plan_start(routine: Sequence[PlanStep]) -> str:
    """The start of the reply `day_plan_prompt` writes for the model: the routine's first line."""
    return f"{routine[0].clock()}\n" if routine else ""


def read_day_plan(reply: str, routine: Sequence[PlanStep]) -> list[PlanStep]:
    """The day plan in a reply to `day_plan_prompt(..., routine)` (its begun first line included)."""
    return day_plan_from(day_plan_start(routine) + reply, routine)[0]


def decompose_prompt(agent: str, parent: PlanStep, level: Level) -> list[Message]:
    low, high = LIMITS[level]
    return [{"role": "user", "content": (
        f"{agent} plans to {parent.text} from {hhmm(parent.start_min)} to {hhmm(parent.end_min)}. Break this into "
        f"consecutive parts of {low} to {high} minutes, one per line, as HH:MM-HH:MM activity.")}]


def reaction_prompt(agent: str, current: PlanStep | None, observation: str,
                    memories: Sequence[MemoryRecord]) -> list[Message]:
    doing = current.clock() if current else "nothing planned"
    remembered = "\n".join(f"- {m.text}" for m in memories) or "- (nothing relevant)"
    return [{"role": "user", "content": (
        f"{agent} is doing: {doing}\n{agent} observes: {observation}\nRelevant memories:\n{remembered}\n\n"
        f"Should {agent} continue the current activity or react to the observation? Answer 'continue', or "
        "'react: <new activity> (<minutes> min)'.")}]


def parse_decision(text: str) -> Decision:
    """'react: talk to Klaus (20 min)' -> react; anything else (including 'continue') -> continue."""
    match = re.search(r"react\s*:[ \t]*(\S[^\n]*)", text, re.IGNORECASE)
    if match is None:
        return Decision(react=False)
    body = match.group(1).strip()
    minutes = re.search(r"\(?\s*(\d{1,3})\s*min(?:utes)?\s*\)?\s*\.?$", body)
    action = body[: minutes.start()].strip().rstrip(".,;:") if minutes else body.rstrip(".")
    if not action:
        return Decision(react=False)
    return Decision(react=True, action=action, minutes=int(minutes.group(1)) if minutes else None)


class Planner:
    """Plans for one agent, stored in its memory stream. `routine` is the persona's fallback day plan."""

    def __init__(self, stream: MemoryStream, generator: Generator, *, summary: str, routine: Sequence[PlanStep],
                 options: PlanningOptions = PlanningOptions()) -> None:
        self.stream, self.generator, self.summary, self.options = stream, generator, summary, options
        self.routine = list(routine)

    def _context(self, query: str, now_h: float) -> list[MemoryRecord]:
        if not self.options.context_memories or len(self.stream) == 0:
            return []
        found = self.stream.retrieve(query, now_h=now_h, options=RetrievalOptions(k=self.options.context_memories))
        return [m.memory for m in found.memories]

    def plan_day(self, *, day: int, now_h: float) -> list[PlanStep]:
        """The day's broad strokes as agents/plan_reader.py reads the reply (the routine filling in what it
        lacks), stored as plans."""
        memories = self._context(f"plans and intentions of {self.stream.agent} for today", now_h)
        reply = self.generator.generate(day_plan_prompt(self.stream.agent, self.summary, memories, day, self.routine),
                                        max_tokens=self.options.max_tokens)
        steps = read_day_plan(reply.text, self.routine)
        self._remember(steps, day=day, now_h=now_h)
        return steps

    def decompose(self, parents: Sequence[PlanStep], *, level: Level, day: int, now_h: float) -> list[PlanStep]:
        """Each parent broken into children of `level` (one batched call), tiling it exactly, stored as plans."""
        if not parents:
            return []
        prompts = [decompose_prompt(self.stream.agent, p, level) for p in parents]
        replies = self.generator.generate_many(prompts, max_tokens=self.options.max_tokens)
        children = [c for p, r in zip(parents, replies, strict=True)
                    for c in fit_children(p, read_plan(r.text, level=level), level=level)]
        self._remember(children, day=day, now_h=now_h)
        return children

    def decide(self, observation: str, *, current: PlanStep | None, now_h: float) -> Decision:
        """Continue the current activity or react to `observation` (one short call)."""
        memories = self._context(observation, now_h)
        reply = self.generator.generate(reaction_prompt(self.stream.agent, current, observation, memories),
                                        max_tokens=48)
        return parse_decision(reply.text)

    def replan(self, steps: Sequence[PlanStep], decision: Decision, *, minute: int, day: int,
               now_h: float) -> list[PlanStep]:
        """The plan from `minute` on after a reaction: the reaction spliced in, later steps moved after it."""
        if not decision.react:
            return list(steps)
        level = steps[0].level if steps else "day"
        length = decision.minutes or self.options.reaction_min
        reaction = PlanStep(minute, min(24 * 60, minute + length), decision.action, level)
        new = splice(steps, reaction)
        self._remember([reaction], day=day, now_h=now_h, reaction=True)
        return new

    def _remember(self, steps: Sequence[PlanStep], *, day: int, now_h: float, reaction: bool = False) -> None:
        self.stream.add_many([NewMemory(kind="plan", text=f"plan for day {day}: {s.clock()}", created_h=now_h,
                                        metadata={"day": day, "start_min": s.start_min, "end_min": s.end_min,
                                                  "level": s.level, "reaction": reaction}) for s in steps])
