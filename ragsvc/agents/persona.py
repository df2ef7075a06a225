"""Agents as files: persona TOML (`agents/*.toml`) and towns (`agents/town/`: one `town.toml` with places and a
seeded event, and one TOML per resident). Every loading error names the file and the line to fix.

A persona:

    name = "Isabella Rodriguez"
    age = 34
    traits = ["friendly", "outgoing"]
    summary = "Isabella runs Hobbs Cafe ..."          # optional: one or two sentences
    home = "Hobbs Cafe"                               # optional: a place of the town
    memories = ["I own Hobbs Cafe.", ...]             # seed memories
    routine = ["07:00-08:00 open the cafe", ...]      # the fallback day plan, HH:MM-HH:MM activity

tomllib reports syntax errors with a line; for a wrong or missing value we find the line of its key in the
text ourselves, so "agents/town/klaus.toml:7: age must be ..." points at what to edit.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragsvc.agents.plan import PlanStep, parse_step
from ragsvc.errors import InvalidInput

_PERSONA_KEYS = {"name", "age", "traits", "summary", "home", "memories", "routine"}
_TOWN_KEYS = {"name", "places", "event"}


@dataclass(frozen=True, slots=True)
class Persona:
    name: str
    age: int
    traits: tuple[str, ...]
    summary: str
    memories: tuple[str, ...]
    routine: tuple[PlanStep, ...]
    home: str | None = None
    source: str = ""
    """The file it was loaded from."""

    def describe(self) -> str:
        """The one paragraph every prompt about this agent starts with."""
        traits = ", ".join(self.traits)
        return f"{self.name} is {self.age} years old ({traits}). {self.summary}".strip()


@dataclass(frozen=True, slots=True)
class Place:
    name: str
    kind: str


@dataclass(frozen=True, slots=True)
class SeededEvent:
    """Something one resident knows at the start that should spread (a party invitation): it becomes a seed
    memory of `host`, and a simulation can check who else remembers it later."""

    host: str
    text: str
    place: str
    day: int
    start: str


@dataclass(frozen=True, slots=True)
class Town:
    name: str
    places: tuple[Place, ...]
    residents: tuple[Persona, ...]
    event: SeededEvent | None


class _Located:
    """A parsed TOML file with the text it came from, for errors that name a line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidInput(f"{path}: cannot read it ({exc.strerror})") from exc
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"{path}: not UTF-8 text (at byte offset {exc.start}); save it as UTF-8 TOML") from exc
        try:
            self.data = tomllib.loads(self.text)
        except tomllib.TOMLDecodeError as exc:
            line = re.search(r"line (\d+)", str(exc))
            where = f"{path}:{line.group(1)}" if line else str(path)
            raise InvalidInput(f"{where}: not valid TOML: {exc}") from exc

    def line_of(self, key: str, *, within: str | None = None) -> int:
        """Line (1-based) of `key = ...`, after the `[within]` / `[[within]]` header when given; 1 if absent
        (a missing key is reported at the top of the file)."""
        lines = self.text.splitlines()
        start = 0
        if within is not None:
            header = re.compile(rf"^\s*\[\[?\s*{re.escape(within)}\s*\]\]?\s*$")
            start = next((i for i, line in enumerate(lines) if header.match(line)), 0)
        pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
        return next((i + 1 for i in range(start, len(lines)) if pattern.match(lines[i])), 1)

    def line_containing(self, fragment: str, *, default: int) -> int:
        return next((i + 1 for i, line in enumerate(self.text.splitlines()) if fragment in line), default)

    def error(self, line: int, message: str) -> InvalidInput:
        return InvalidInput(f"{self.path}:{line}: {message}")


def _string(f: _Located, data: Mapping[str, Any], key: str, *, within: str | None = None,
            required: bool = True) -> str | None:
    value = data.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise f.error(f.line_of(key, within=within), f"{key} must be a non-empty string, got {value!r}")
    return value.strip()


def _strings(f: _Located, data: Mapping[str, Any], key: str) -> list[str]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise f.error(f.line_of(key), f"{key} must be a list of non-empty strings")
    return [v.strip() for v in value]


def load_persona(path: Path) -> Persona:
    f = _Located(Path(path))
    data = f.data
    unknown = sorted(set(data) - _PERSONA_KEYS)
    if unknown:
        raise f.error(f.line_of(unknown[0]), f"unknown key {unknown[0]!r}; a persona has {sorted(_PERSONA_KEYS)}")
    name = _string(f, data, "name")
    age = data.get("age")
    if not isinstance(age, int) or isinstance(age, bool) or not 0 < age < 130:
        raise f.error(f.line_of("age"), f"age must be a whole number of years in 1-129, got {age!r}")
    traits = _strings(f, data, "traits")
    routine: list[PlanStep] = []
    for entry in _strings(f, data, "routine"):
        step = parse_step(entry, level="day")
        if step is None:
            raise f.error(f.line_containing(entry, default=f.line_of("routine")),
                          f"routine entry {entry!r} is not 'HH:MM-HH:MM activity' (24-hour clock, start < end)")
        if routine and step.start_min < routine[-1].end_min:
            raise f.error(f.line_containing(entry, default=f.line_of("routine")),
                          f"routine entry {entry!r} starts before the previous one ends; list them in time order")
        routine.append(step)
    assert name is not None
    return Persona(name=name, age=age, traits=tuple(traits), summary=_string(f, data, "summary", required=False) or "",
                   memories=tuple(_strings(f, data, "memories")), routine=tuple(routine),
                   home=_string(f, data, "home", required=False), source=str(f.path))


def load_town(directory: Path) -> Town:
    """`directory`/town.toml plus every other *.toml in it as a resident."""
    directory = Path(directory)
    f = _Located(directory / "town.toml")
    data = f.data
    unknown = sorted(set(data) - _TOWN_KEYS)
    if unknown:
        raise f.error(f.line_of(unknown[0]), f"unknown key {unknown[0]!r}; a town has {sorted(_TOWN_KEYS)}")
    name = _string(f, data, "name")
    places = _places(f, data.get("places", []))
    residents = tuple(load_persona(p) for p in sorted(directory.glob("*.toml")) if p.name != "town.toml")
    if not 2 <= len(residents) <= 12:
        raise f.error(1, f"a town needs 2-12 residents (one TOML each beside town.toml), found {len(residents)}")
    names = [r.name for r in residents]
    _refuse_repeats(directory, [(r.name, r.source) for r in residents], "resident")
    _refuse_repeats(directory, [(p.name, str(f.path)) for p in places], "place")
    place_names = {p.name for p in places}
    for r in residents:
        if r.home is not None and r.home not in place_names:
            raise InvalidInput(f"{r.source}:{_Located(Path(r.source)).line_of('home')}: home {r.home!r} is not a "
                               f"place of {directory / 'town.toml'} ({', '.join(sorted(place_names))})")
    event = _event(f, data.get("event"), names, place_names)
    assert name is not None
    return Town(name=name, places=places, residents=residents, event=event)


def _refuse_repeats(directory: Path, named: Sequence[tuple[str, str]], what: str) -> None:
    """Residents and places are looked up by name, so two that differ only in case or spacing would merge."""
    seen: dict[str, tuple[str, str]] = {}
    for name, source in named:
        key = " ".join(name.casefold().split())
        if key in seen:
            first, first_source = seen[key]
            places = source if source == first_source else f"{first_source} and {source}"
            names = repr(name) if name == first else f"{first!r} and {name!r}"
            raise InvalidInput(f"{directory}: two {what}s are named {names} ({places}); give each its own name")
        seen[key] = (name, source)


def _places(f: _Located, raw: Any) -> tuple[Place, ...]:
    if not isinstance(raw, list) or not raw:
        raise f.error(f.line_of("places"), "places must be one or more [[places]] tables with name and kind")
    places = []
    for entry in raw:
        if not isinstance(entry, dict):
            raise f.error(f.line_of("places"), "each place must be a [[places]] table")
        places.append(Place(name=_string(f, entry, "name", within="places") or "",
                            kind=_string(f, entry, "kind", within="places") or ""))
    return tuple(places)


def _event(f: _Located, raw: Any, residents: Sequence[str], places: set[str]) -> SeededEvent | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise f.error(f.line_of("event"), "event must be an [event] table")
    host = _string(f, raw, "host", within="event") or ""
    if host not in residents:
        raise f.error(f.line_of("host", within="event"),
                      f"event host {host!r} is not a resident ({', '.join(residents)})")
    place = _string(f, raw, "place", within="event") or ""
    if place not in places:
        raise f.error(f.line_of("place", within="event"), f"event place {place!r} is not one of the town's places")
    day = raw.get("day")
    if not isinstance(day, int) or isinstance(day, bool) or day < 1:
        raise f.error(f.line_of("day", within="event"), f"event day must be a whole number >= 1, got {day!r}")
    start = _string(f, raw, "start", within="event") or ""
    if not re.fullmatch(r"([01]?\d|2[0-3]):[0-5]\d", start):
        raise f.error(f.line_of("start", within="event"), f"event start must be HH:MM, got {start!r}")
    return SeededEvent(host=host, text=_string(f, raw, "text", within="event") or "", place=place, day=day,
                       start=start)
