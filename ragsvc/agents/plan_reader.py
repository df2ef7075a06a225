"""Reading plans the way small models write them. Asked for "HH:MM-HH:MM activity" lines, a 135M model writes
bullets and numbering, 12-hour times ("6:00 AM", "7pm"), times inside the sentence ("Wake up at 6:00 AM"),
start times without an end, "until 10:00 PM", markdown, a "Name:" header, and the same line over and over.
`read_plan` takes what it can from such a reply; `day_plan_from` turns that into a day plan of 5-8 steps,
filling in from the persona's routine rather than throwing a partial plan away.

Rules, so a reader can predict the result:
- a line's first time is its start; a second time joined to it ("-", "to", "until") is its end; a line whose
  only time follows "until"/"till"/"by" ends at that time and starts where the previous step ended;
- a bare number is a time only with am/pm ("7pm") or in a range with a clock time ("9-10:30");
- the activity is the line without bullets, markdown, its times and the words that introduce them ("at",
  "from"); a line left with no letters (a time alone) is not a step;
- steps must move forward in the day: a line starting no later than the previous kept one is dropped (the
  repetition loops small models fall into restart the day), as is a line repeating an earlier activity;
- a missing end is the next step's start, and the last step's is `last_min` minutes later; an end past the
  next start is cut there.
Pure: no model, no store.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from ragsvc.agents.plan import DAY_MIN, Level, PlanStep

DAY_STEPS = (5, 8)
"""Broad strokes a day plan may have (the paper's 5-8)."""
MAX_TEXT = 120
"""The longest activity kept (a model's paragraph is cut after its first sentence, then here)."""

_TIME = re.compile(
    r"(?<![\d:.])(?:(?P<h>\d{1,2})(?:[:.h](?P<m>[0-5]\d))?(?::[0-5]\d)?(?:\s*(?P<ap>[ap])\.?\s?m\b\.?)?"
    r"|(?P<word>noon|midnight))(?![\d])", re.IGNORECASE)
_JOIN = re.compile(r"\s*(?:-|–|—|to|until|till|and)\s*", re.IGNORECASE)
"""What may stand between two times of one range."""
_UNTIL = re.compile(r"\b(?:until|till|by)\s*$", re.IGNORECASE)
_LEAD = re.compile(r"(?:\b(?:at|from|between|around|about|starting|until|till|by|to|and)|[-–—])\s*$", re.IGNORECASE)
"""The word that introduces a time, at the end of the text before it; the spaces before the word are stripped
in Python (a leading `\s*` makes the search quadratic in a line's runs of spaces)."""
_SUBJECT = re.compile(
    r"^(?:I|he|she|they|[A-Z][a-z]+(?: [A-Z][a-z]+)?(?:, \d+,)?)\s+(?:will|'ll|plans? to|is planning to|"
    r"is going to|wants? to|intends? to)\s+", re.IGNORECASE)
_BULLET = re.compile(r"^\s*(?:[-*•+>]|\d{1,2}[.)](?!\d)|step\s+\d+\s*[:.)])\s*", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class _Time:
    minute: int
    start: int
    end: int
    explicit: bool
    """A clock time or am/pm, not a bare number (which counts only in a range with an explicit time)."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One line of a plan as written: start (None: where the previous step ended), end (None: not given)."""

    start_min: int | None
    end_min: int | None
    text: str


def _times(line: str) -> list[_Time]:
    found = []
    for m in _TIME.finditer(line):
        if m.group("word"):
            minute = 12 * 60 if m.group("word").lower() == "noon" else 0
            found.append(_Time(minute, m.start(), m.end(), True))
            continue
        hour, minutes, ap = int(m.group("h")), int(m.group("m") or 0), (m.group("ap") or "").lower()
        if ap:
            if not 1 <= hour <= 12:
                continue
            hour = hour % 12 + (12 if ap == "p" else 0)
        if hour > 24 or (hour == 24 and minutes):
            continue
        found.append(_Time(hour * 60 + minutes, m.start(), m.end(), bool(ap or m.group("m"))))
    return found


def _without_lead(before: str) -> str:
    """`before` less a trailing word that introduces a time ("at", "from", a dash) and the spaces around it."""
    lead = _LEAD.search(before)
    return before[: lead.start()].rstrip() if lead else before


def _activity(line: str, times: Sequence[_Time]) -> str:
    """The line without `times` (and the word introducing each), bullets, markdown, a leading "I will" or
    "Name plans to", and anything after its first sentence; at most MAX_TEXT characters."""
    text = line
    for t in sorted(times, key=lambda t: -t.start):
        text = _without_lead(text[: t.start]) + " " + text[t.end :]
    text = _BULLET.sub("", text.replace("**", "").replace("__", ""))
    text = re.sub(r"\(\s*\)|\[\s*\]", " ", text)
    text = re.sub(r"\s+([,.;:])", r"\1", re.sub(r"\s+", " ", text)).strip(" \t:;,.-–—|*#")
    text = _SUBJECT.sub("", text)
    text = re.split(r"(?<=[a-z])\.\s", text, maxsplit=1)[0].strip(" :;,.-")
    return text[:MAX_TEXT].rstrip() if re.search(r"[A-Za-z]", text) else ""


def _range(line: str, times: Sequence[_Time]) -> tuple[_Time, _Time | None] | None:
    """The line's first time (with the time ending its range, if any): the first explicit time, or a bare
    number that starts a range ending in an explicit time ("9-10:30", "from 9 to 5pm")."""
    for i, t in enumerate(times):
        nxt = times[i + 1] if i + 1 < len(times) else None
        joined = nxt is not None and _JOIN.fullmatch(line[t.end:nxt.start]) is not None
        if joined and nxt is not None and (t.explicit or nxt.explicit):
            return t, nxt
        if t.explicit:
            return t, None
    return None


def read_entry(line: str) -> Entry | None:
    """One line -> its start, end and activity, or None when it holds no time or no activity."""
    times = _times(line)
    found = _range(line, times)
    if found is None:
        return None
    first, second = found
    text = _activity(line, [t for t in times if t.explicit or t is first])
    if not text:
        return None
    if second is not None:
        start, end = first.minute, second.minute
        if not first.explicit and start < end - 12 * 60:  # "9-10pm": the bare start shares the end's half-day
            start += 12 * 60
        return Entry(start, end, text)
    if _UNTIL.search(line[:first.start]):
        return Entry(None, first.minute, text)
    return Entry(first.minute, None, text)


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def read_entries(text: str) -> list[Entry]:
    """Every plan line of `text` that moves the day forward, repeats dropped (see the module docstring)."""
    kept: list[Entry] = []
    seen: set[str] = set()
    last_start = -1
    for line in text.splitlines():
        entry = read_entry(line)
        if entry is None or _key(entry.text) in seen or (entry.start_min or 0) >= DAY_MIN:
            continue
        start = entry.start_min
        if start is None:
            if not kept:
                continue
        elif start <= last_start:
            continue
        else:
            last_start = start
        seen.add(_key(entry.text))
        kept.append(entry)
    return kept


def read_plan(text: str, *, level: Level = "day", last_min: int = 60) -> list[PlanStep]:
    """The steps in `text`, in order, without overlaps, each within the day and with some activity."""
    entries = read_entries(text)
    starts: list[int] = []
    for e in entries:  # a step given only an end starts where the previous one ended (or its start + last_min)
        if e.start_min is not None:
            starts.append(e.start_min)
        else:
            previous = entries[len(starts) - 1]
            starts.append(previous.end_min if previous.end_min is not None else starts[-1] + last_min)
    steps: list[PlanStep] = []
    for i, e in enumerate(entries):
        start = starts[i]
        following = next((s for s in starts[i + 1:] if s > start), None)
        end = e.end_min if e.end_min is not None and e.end_min > start else following or start + last_min
        end = min(end, following or DAY_MIN, DAY_MIN)
        if steps and start < steps[-1].end_min:
            start = steps[-1].end_min
        if start < end:
            steps.append(PlanStep(start, end, e.text, level))
    return steps


def merge_to(steps: Sequence[PlanStep], most: int) -> list[PlanStep]:
    """At most `most` steps: the shortest neighbouring pair merged (the longer one's text) until it fits."""
    out = list(steps)
    while len(out) > most:
        i = min(range(len(out) - 1), key=lambda j: (out[j].minutes + out[j + 1].minutes, j))
        a, b = out[i], out[i + 1]
        out[i: i + 2] = [replace(a if a.minutes >= b.minutes else b, start_min=a.start_min, end_min=b.end_min)]
    return out


def overlay(routine: Sequence[PlanStep], steps: Sequence[PlanStep]) -> list[PlanStep]:
    """`steps` over the routine: each routine step keeps only the parts the model's steps leave free."""
    out = list(steps)
    for r in routine:
        free = [(r.start_min, r.end_min)]
        for s in steps:
            free = [part for a, b in free for part in ((a, min(b, s.start_min)), (max(a, s.end_min), b)) if
                    part[0] < part[1]]
        out.extend(replace(r, start_min=a, end_min=b) for a, b in free if b - a >= 15)
    return sorted(out, key=lambda s: s.start_min)


def day_plan_from(text: str, routine: Sequence[PlanStep]) -> tuple[list[PlanStep], str]:
    """(the day plan, where it came from): the model's steps when it wrote 5 or more ("model", merged down to
    8), the few it wrote laid over the routine when that leaves 5 or more ("model+routine"), else the routine."""
    steps = read_plan(text, level="day", last_min=120)
    if len(steps) >= DAY_STEPS[0]:
        return merge_to(steps, DAY_STEPS[1]), "model"
    mixed = merge_to(overlay(routine, steps), DAY_STEPS[1]) if steps else []
    if len(mixed) >= DAY_STEPS[0]:
        return mixed, "model+routine"
    return list(routine), "routine"
