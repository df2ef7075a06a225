"""Interview questions in the five categories of Park et al. 2023, each with a check derived from the data.

    self-knowledge  who the agent is: the persona's summary and traits, its seed memories about itself
    memory          who is someone it has met (its seed memories about them), whether it knows each neighbour
                    (yes iff one of its memories names them), whether it heard of the seeded event
    plans           what it will do at a time (its stored day plan, else the persona's routine), and where it
                    will be when the event starts (the event if it knows of it, else its plan)
    reactions       meeting a neighbour: a right answer brings up what it knows about them or the event
    reflections     what its own reflections concluded (checked against the insight's words that its persona
                    description does not already give), whom it knows best (the neighbours its memories name
                    most), whom it would spend time with

Everything a check expects is read from the town's files, the run's memory records and its transcript, so
another town or another run gets its own questions and answers; nothing is written for Willow Creek. The ground
truth of "knows X" and "heard of the event" is what the agent experienced: its whole memory stream after the
run, plus the transcript's rows (a "say" row: the speaker and the listener talked; a "learned_event" row: the
agent heard of the event), while an interviewed agent only sees what its condition lets it retrieve: that gap
is what the ablations measure. Pure: no model, no store.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ragsvc.agents.interview_check import Check, content_words, mentions, words
from ragsvc.agents.persona import Persona, Town
from ragsvc.agents.plan import PlanStep, hhmm, parse_step
from ragsvc.agents.reflection import echoes_request
from ragsvc.errors import InvalidInput
from ragsvc.store.memories import MemoryRecord

CATEGORIES = ("self-knowledge", "memory", "plans", "reactions", "reflections")
MAX_REFLECTION_QUESTIONS = 5
"""Distinct questions taken from an agent's reflections (its most important ones): a reflection pass asks a
few questions and stores several insights under each, and asking the same question twice measures nothing new."""


def parse_categories(text: str | None) -> tuple[str, ...]:
    """"plans,reflections" -> those categories (None or "": all five); unknown names are refused."""
    if not text:
        return CATEGORIES
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in CATEGORIES]
    if unknown or not names:
        raise InvalidInput(f"unknown interview categor(ies) {unknown or text!r}; choose from {', '.join(CATEGORIES)}")
    return names


@dataclass(frozen=True, slots=True)
class Question:
    id: str
    """Stable across runs of the same data: agent slug / category / position."""
    agent: str
    category: str
    text: str
    check: Check
    source: str
    """Where the expected answer comes from, for reading a report."""


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def names_person(text: str, person: Persona) -> bool:
    """Whether `text` names `person` (full name, or first name as a word)."""
    said = words(text)
    first = words(person.name)[0]
    return person.name.lower() in text.lower() or first in said


def event_keywords(town: Town) -> tuple[str, ...]:
    """The event's own words: its text's content words other than places, residents and the town's name."""
    if town.event is None:
        return ()
    exclude = [town.name, *(p.name for p in town.places), *(r.name for r in town.residents)]
    return content_words(town.event.text, exclude=exclude)


@dataclass(frozen=True, slots=True)
class Experience:
    """What the transcript says happened to one agent: who it talked with (lines said or heard), whether it
    learned of the event."""

    talked_with: Counter[str]
    learned_event: bool = False


def experiences(transcript: Sequence[Mapping[str, Any]]) -> dict[str, Experience]:
    talked: dict[str, Counter[str]] = {}
    learned: set[str] = set()
    for row in transcript:
        agent, partner = str(row.get("agent", "")), str(row.get("partner", ""))
        if row.get("action") == "say" and agent and partner:
            talked.setdefault(agent, Counter())[partner] += 1
            talked.setdefault(partner, Counter())[agent] += 1
        elif row.get("action") == "learned_event" and agent:
            learned.add(agent)
    return {a: Experience(talked.get(a, Counter()), a in learned) for a in set(talked) | learned}


NOTHING = Experience(Counter())


def knows_event(agent: str, records: Sequence[MemoryRecord], town: Town, seen: Experience) -> bool:
    """The host, an agent the transcript says learned of it, or one with a memory that uses the event's own
    words (a conversation that carried it)."""
    if town.event is None:
        return False
    keywords = event_keywords(town)
    return agent == town.event.host or seen.learned_event or any(mentions(r.text, keywords) for r in records)


def acquaintances(agent: str, records: Sequence[MemoryRecord], town: Town,
                  seen: Experience) -> Counter[str]:
    """Neighbours named in the agent's memories (plans left out: a plan is not an encounter) or met in the
    transcript, with counts (memories naming them + lines exchanged)."""
    counts: Counter[str] = Counter()
    for other in town.residents:
        if other.name != agent:
            counts[other.name] = (sum(names_person(r.text, other) for r in records if r.kind != "plan")
                                  + seen.talked_with[other.name])
    return +counts


def day_plan(persona: Persona, records: Sequence[MemoryRecord], *,
             default_day: int) -> tuple[int, list[PlanStep], bool]:
    """(day, steps, stored) of the latest day plan stored as memories, else the persona's routine for
    `default_day` (stored False)."""
    by_day: dict[int, list[PlanStep]] = {}
    for r in records:
        meta = r.metadata
        if r.kind != "plan" or meta.get("level") != "day" or meta.get("reaction") or "day" not in meta:
            continue
        step = parse_step(r.text.split(": ", 1)[-1], level="day")
        if step is not None:
            by_day.setdefault(int(meta["day"]), []).append(step)
    if by_day:
        day = max(by_day)
        return day, sorted(by_day[day], key=lambda s: s.start_min), True
    return default_day, list(persona.routine), False


def step_at(steps: Sequence[PlanStep], minute: int) -> PlanStep | None:
    return next((s for s in steps if s.start_min <= minute < s.end_min), None)


def _others(town: Town, agent: str) -> list[Persona]:
    return [r for r in town.residents if r.name != agent]


def _exclude(town: Town, persona: Persona) -> list[str]:
    return [town.name, persona.name]


def self_questions(persona: Persona, town: Town) -> list[tuple[str, Check, str]]:
    own = content_words(persona.summary, exclude=[*_exclude(town, persona), *(o.name for o in town.residents)])
    about_me = [m for m in persona.memories if re.match(r"\s*I\b", m) and not any(
        names_person(m, o) for o in _others(town, persona.name))]
    work = content_words(" ".join(about_me[:2]), exclude=_exclude(town, persona))
    found = []
    if own:
        found.append(("Who are you? Introduce yourself in one sentence.", Check(keywords=own), "persona summary"))
    if persona.traits:
        traits = content_words(" ".join(persona.traits))
        if traits:
            found.append(("How would you describe your personality?", Check(keywords=traits), "persona traits"))
    if work:
        found.append(("What do you do with your days?", Check(keywords=work), "seed memories about itself"))
    found.append(("How old are you?", Check(keywords=(str(persona.age),)), "persona age"))
    home = content_words(persona.home or "", exclude=[town.name])
    if home:
        found.append(("Where do you live?", Check(keywords=home), "persona home"))
    return found


def last_seen(persona: Persona, other: Persona, records: Sequence[MemoryRecord],
              town: Town) -> tuple[str, ...]:
    """The words of the agent's latest observation of `other` ("Jonah is at Market Square: play guitar"), less
    names: what a good memory recalls about them; () when it never saw them."""
    seen = [r for r in records if r.kind == "observation" and r.text.startswith(other.name + " is at ")]
    latest = max(seen, key=lambda r: (r.created_h, r.id), default=None)
    return content_words(latest.text, exclude=[*_exclude(town, persona), other.name]) if latest else ()


def memory_questions(persona: Persona, records: Sequence[MemoryRecord], town: Town,
                     seen: Experience) -> list[tuple[str, Check, str]]:
    found = []
    for other in _others(town, persona.name):
        facts = [m for m in persona.memories if names_person(m, other)]
        keywords = content_words(" ".join(facts), exclude=[*_exclude(town, persona), other.name])
        if keywords:
            found.append((f"Who is {other.name}?", Check(keywords=keywords), "seed memory naming them"))
    event = town.event
    if event is not None:
        knows = knows_event(persona.name, records, town, seen)
        check = Check(keywords=event_keywords(town), polarity="yes") if knows else Check(polarity="no")
        found.append((f"Have you heard of anything happening at {event.place} on the evening of day {event.day}? "
                      "Answer yes or no first.", check, "seeded event and the agent's memories"))
    known = acquaintances(persona.name, records, town, seen)
    for other in _others(town, persona.name):
        expected = Check(polarity="yes") if known[other.name] else Check(polarity="no")
        found.append((f"Do you know {other.name}? Answer yes or no first.", expected,
                      "memories naming them, lines exchanged in the transcript"))
    for other in _others(town, persona.name):
        keywords = last_seen(persona, other, records, town)
        if keywords:
            found.append((f"Where did you last see {other.name}, and what were they doing?", Check(keywords=keywords),
                          "the agent's latest observation of them"))
    return found


def step_keywords(step: PlanStep, persona: Persona, town: Town) -> tuple[str, ...]:
    """What shows an agent knows what it does at that time: the step's words other than those its persona
    description already gives ("bread" for a baker's "bake the day's bread", not "bake"), so an agent that
    knows only who it is cannot pass by naming its trade; all of them when nothing else is left."""
    words_ = content_words(step.text, exclude=_exclude(town, persona))
    known = content_words(persona.describe(), exclude=_exclude(town, persona))
    specific = tuple(w for w in words_ if not mentions(w, known))
    return specific or words_


def plan_questions(persona: Persona, records: Sequence[MemoryRecord], town: Town, now_h: float,
                   seen: Experience) -> list[tuple[str, Check, str]]:
    day, steps, stored = day_plan(persona, records, default_day=int(now_h // 24) + 1)
    source = "stored day plan" if stored else "persona routine"
    found = []
    for step in [s for i, s in enumerate(steps) if i in (1, 3)]:
        keywords = step_keywords(step, persona, town)
        if keywords:
            minute = (step.start_min + step.end_min) // 2 // 15 * 15
            found.append((f"What will you be doing at {hhmm(minute)} on day {day}?", Check(keywords=keywords), source))
    event = town.event
    if event is not None:
        minute = int(event.start[:-3]) * 60 + int(event.start[-2:])
        if knows_event(persona.name, records, town, seen):
            keywords = event_keywords(town) + content_words(event.place)
            found.append((f"Where will you be at {event.start} on day {event.day}, and what will you do there?",
                          Check(keywords=keywords), "seeded event (the agent knows of it)"))
        else:
            at = step_at(steps if day == event.day else persona.routine, minute)
            keywords = step_keywords(at, persona, town) if at else ()
            if keywords:
                found.append((f"Where will you be at {event.start} on day {event.day}, and what will you do there?",
                              Check(keywords=keywords), "plan at the event's time (the agent does not know of it)"))
    for step in [s for i, s in enumerate(steps) if i not in (1, 3)]:  # the rest of the day, after the telling ones
        keywords = step_keywords(step, persona, town)
        if keywords:
            minute = (step.start_min + step.end_min) // 2 // 15 * 15
            found.append((f"What will you be doing at {hhmm(minute)} on day {day}?", Check(keywords=keywords), source))
    return found


def reaction_questions(persona: Persona, records: Sequence[MemoryRecord], town: Town,
                       seen: Experience) -> list[tuple[str, Check, str]]:
    homes = {r.home for r in town.residents}
    place = next((p.name for p in town.places if p.name not in homes), town.places[0].name)
    news = event_keywords(town) if knows_event(persona.name, records, town, seen) else ()
    found = []
    for other in _others(town, persona.name):
        facts = [m for m in persona.memories if names_person(m, other)]
        keywords = content_words(" ".join(facts), exclude=[*_exclude(town, persona), other.name]) + news
        if keywords:
            source = "seed memory naming them" + (" and the event" if news else "") if facts else "the event"
            found.append((f"You run into {other.name} at {place}. What would you talk about with them?",
                          Check(keywords=tuple(dict.fromkeys(keywords))), source))
    for other in _others(town, persona.name):
        seen_doing = last_seen(persona, other, records, town)
        if seen_doing and not any(names_person(m, other) for m in persona.memories):
            found.append((f"{other.name} waves at you. What do you say to them?", Check(keywords=seen_doing + news),
                          "the agent's latest observation of them" + (" and the event" if news else "")))
    return found


def reflection_question(persona: Persona, reflection: MemoryRecord, town: Town) -> tuple[str, Check] | None:
    """The question a stored reflection answers, and its check; None when it cannot test the reflection.

    The question is the one the reflection pass asked, unless that is the request copied back (then: what the
    agent concluded about the resident the insight names, or about itself). The check is the insight's words
    other than those the question and the persona description already give: every condition sees the persona,
    so an insight that only restates it ("Lena is a painter") tests who the agent is, not its reflection."""
    question = str(reflection.metadata.get("question") or "")
    if not question or echoes_request(question, persona.name):
        named = next((o for o in _others(town, persona.name) if names_person(reflection.text, o)), None)
        question = f"What have you come to think about {named.name if named else 'yourself'}?"
    known = content_words(persona.describe(), exclude=_exclude(town, persona))
    keywords = tuple(w for w in content_words(reflection.text, exclude=[*_exclude(town, persona), question])
                     if not mentions(w, known))
    return (question, Check(keywords=keywords)) if keywords else None


def reflection_questions(persona: Persona, records: Sequence[MemoryRecord], town: Town,
                         seen: Experience) -> list[tuple[str, Check, str]]:
    found = []
    reflections = sorted((r for r in records if r.kind == "reflection"), key=lambda r: (-(r.importance or 0.0), r.id))
    asked: set[str] = set()
    for r in reflections:
        made = reflection_question(persona, r, town)
        if made is not None and made[0] not in asked and len(asked) < MAX_REFLECTION_QUESTIONS:
            asked.add(made[0])
            found.append((made[0], made[1], f"reflection memory {r.id}"))
    known = acquaintances(persona.name, records, town, seen)
    if known:
        top = max(known.values())
        best = [n for n, c in known.items() if c == top]
        found.append((f"Who in {town.name} do you know best, and why?",
                      Check(keywords=tuple(words(n)[0] for n in best)),
                      "neighbours its memories name most"))
        found.append(("If you could spend time with one person you met recently, who would it be and why?",
                      Check(keywords=tuple(words(n)[0] for n in known)), "neighbours its memories name"))
    return found


def generate_questions(town: Town, memories: Mapping[str, Sequence[MemoryRecord]], *, now_h: float,
                       transcript: Sequence[Mapping[str, Any]] = (),
                       max_per_category: int | None = None) -> list[Question]:
    """Every resident's questions, category by category; at most `max_per_category` of each (the first ones:
    the generators list the most telling questions first). `transcript`: the run's rows (see `experiences`)."""
    if max_per_category is not None and max_per_category < 1:
        raise ValueError(f"max_per_category must be at least 1 (or None for all), got {max_per_category}")
    questions = []
    seen_by = experiences(transcript)
    for persona in town.residents:
        records = list(memories.get(persona.name, ()))
        seen = seen_by.get(persona.name, NOTHING)
        per_category = {
            "self-knowledge": self_questions(persona, town),
            "memory": memory_questions(persona, records, town, seen),
            "plans": plan_questions(persona, records, town, now_h, seen),
            "reactions": reaction_questions(persona, records, town, seen),
            "reflections": reflection_questions(persona, records, town, seen),
        }
        for category in CATEGORIES:
            for i, (text, check, source) in enumerate(per_category[category][:max_per_category]):
                questions.append(Question(id=f"{slug(persona.name)}/{category}/{i}", agent=persona.name,
                                          category=category, text=text, check=check, source=source))
    return questions
