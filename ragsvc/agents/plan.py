"""Plans as plain data: steps with a span in minutes since the day's midnight, and the pure operations on them
(parse "HH:MM-HH:MM activity" lines, fit children into a parent, splice a reaction in). No model, no store:
agents/planning.py calls the model and stores plans; everything here is tested by hand.

Levels: a day plan of 5-8 broad strokes -> hour blocks (<= 60 min) -> actions of 5-15 min. Children always
tile their parent exactly (no gap, no overlap), whatever the model wrote: `fit_children` repairs or replaces.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from ragsvc.errors import InvalidInput

Level = Literal["day", "hour", "action"]
DAY_MIN = 24 * 60
LIMITS: dict[str, tuple[int, int]] = {"hour": (15, 60), "action": (5, 15)}
"""(shortest, longest) child span in minutes for each decomposed level."""

_LINE = re.compile(r"(?:[-*•]|\d+[.)])?\s*(\d{1,2}):(\d{2})\s*(?:-|–|to)\s*(\d{1,2}):(\d{2})\s*[:,-]?\s*(.+)")
"""Matched from a line's first non-space, its text stripped in Python: with `^\s*` and `(.+?)\s*$` of its own
the pattern is quadratic in a line's runs of spaces (1.2 s for a model's line of 8,000)."""


@dataclass(frozen=True, slots=True)
class PlanStep:
    start_min: int
    end_min: int
    text: str
    level: Level = "day"

    @property
    def minutes(self) -> int:
        return self.end_min - self.start_min

    def clock(self) -> str:
        return f"{hhmm(self.start_min)}-{hhmm(self.end_min)} {self.text}"


def hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def parse_clock(text: str) -> int:
    """"HH:MM" -> minutes since midnight (24:00 allowed as the day's end)."""
    match = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*", text)
    if match is None:
        raise InvalidInput(f"time {text!r} is not HH:MM (24-hour clock), e.g. 07:30")
    minutes = int(match.group(1)) * 60 + int(match.group(2))
    if int(match.group(2)) >= 60 or minutes > DAY_MIN:
        raise InvalidInput(f"time {text!r} is out of range; use 00:00 to 24:00")
    return minutes


def parse_step(line: str, *, level: Level = "day") -> PlanStep | None:
    """One "HH:MM-HH:MM activity" line (numbering or bullets allowed) -> a step, or None if it is not one."""
    match = _LINE.match(line.lstrip())
    if match is None:
        return None
    h1, m1, h2, m2, text = match.groups()
    start, end = int(h1) * 60 + int(m1), int(h2) * 60 + int(m2)
    if int(m1) >= 60 or int(m2) >= 60 or not 0 <= start < end <= DAY_MIN or not text.strip():
        return None
    return PlanStep(start, end, text.strip().rstrip("."), level)


def parse_steps(text: str, *, level: Level = "day") -> list[PlanStep]:
    """Every step line in `text`, in time order, later overlapping lines dropped."""
    steps = sorted((s for line in text.splitlines() if (s := parse_step(line, level=level)) is not None),
                   key=lambda s: s.start_min)
    kept: list[PlanStep] = []
    for s in steps:
        if not kept or s.start_min >= kept[-1].end_min:
            kept.append(s)
    return kept


def split_evenly(parent: PlanStep, *, level: Level, text: str | None = None) -> list[PlanStep]:
    """The fallback decomposition: `parent` cut into equal children no longer than the level allows."""
    longest = LIMITS[level][1]
    count = max(1, -(-parent.minutes // longest))
    bounds = [parent.start_min + round(i * parent.minutes / count) for i in range(count + 1)]
    return [PlanStep(a, b, text or parent.text, level) for a, b in zip(bounds, bounds[1:], strict=False)]


def fit_children(parent: PlanStep, children: Sequence[PlanStep], *, level: Level) -> list[PlanStep]:
    """Children that tile `parent` exactly within the level's limits: clipped to the parent, gaps given to the
    previous child (or the next, at the start), over-long children split evenly, too-short ones merged into
    their predecessor. No usable child -> an even split of the parent."""
    shortest, _ = LIMITS[level]
    inside = [replace(c, start_min=max(c.start_min, parent.start_min), end_min=min(c.end_min, parent.end_min),
                      level=level) for c in sorted(children, key=lambda c: c.start_min)]
    tiled: list[PlanStep] = []
    for c in inside:
        if c.end_min <= c.start_min or (tiled and c.end_min <= tiled[-1].end_min):
            continue
        start = parent.start_min if not tiled else tiled[-1].end_min
        if tiled and c.start_min > start:  # a gap: the previous activity runs on until this one starts
            tiled[-1] = replace(tiled[-1], end_min=c.start_min)
            start = c.start_min
        tiled.append(replace(c, start_min=start))
    if not tiled:
        return split_evenly(parent, level=level)
    tiled[-1] = replace(tiled[-1], end_min=parent.end_min)
    merged: list[PlanStep] = []
    for c in tiled:
        if merged and c.minutes < shortest:
            merged[-1] = replace(merged[-1], end_min=c.end_min)
        else:
            merged.append(c)
    if len(merged) > 1 and merged[0].minutes < shortest:
        merged[1] = replace(merged[1], start_min=merged[0].start_min)
        merged.pop(0)
    return [part for c in merged for part in split_evenly(c, level=level, text=c.text)]


def step_at(steps: Sequence[PlanStep], minute: int) -> PlanStep | None:
    """The step whose span holds `minute`."""
    return next((s for s in steps if s.start_min <= minute < s.end_min), None)


def splice(steps: Sequence[PlanStep], reaction: PlanStep) -> list[PlanStep]:
    """The plan after reacting: steps finished before the reaction kept, the current one cut where the reaction
    starts, the reaction inserted, later steps pushed to start when it ends (and dropped if nothing is left)."""
    out: list[PlanStep] = []
    for s in steps:
        if s.end_min <= reaction.start_min:
            out.append(s)
        elif s.start_min < reaction.start_min:
            out.append(replace(s, end_min=reaction.start_min))
    out.append(reaction)
    for s in steps:
        if s.end_min > reaction.end_min:
            out.append(replace(s, start_min=max(s.start_min, reaction.end_min)))
    return out


def check_tiling(parent: PlanStep, children: Sequence[PlanStep]) -> None:
    """The invariant `fit_children` guarantees; a RuntimeError names the first break (a bug, not bad input)."""
    cursor = parent.start_min
    for c in children:
        if c.start_min != cursor or c.end_min <= c.start_min:
            raise RuntimeError(f"children of {parent.clock()!r} do not tile it at {hhmm(cursor)}: {c.clock()!r}")
        cursor = c.end_min
    if cursor != parent.end_min:
        raise RuntimeError(f"children of {parent.clock()!r} end at {hhmm(cursor)}")
