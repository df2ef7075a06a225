"""A simulation's options, checked at the edge, and its identity: what must match for a data folder to be
resumed rather than refused.

The clock is simulation hours since day 1 00:00 (`start_h` 8.0 = day 1, 08:00). A tick advances it by
`tick_minutes`; a run of `hours` has `hours * 60 / tick_minutes` ticks. Everything the model is asked per tick
is bounded: calls and completion tokens per agent (`max_calls_per_agent`, `max_tokens_per_agent`), dialogue
turns, reflection questions and insights, memories rated.

Identity. `hours` is left out (running again with more hours extends a run) and so are `sequential` and
`prime_prefix` (how the calls reach the engine, not what is simulated); every other option, the model, the
embedder and the town's files are in the fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ragsvc.errors import InvalidInput

MAX_HOURS = 72.0
MAX_TICKS = 2000
EVENT_WORDS = ("party", "festival", "wedding", "concert", "fair", "dinner", "celebration", "meeting")
"""Words that name a seeded event, first match in its text: how the transcript tells that someone heard of it."""


@dataclass(frozen=True, slots=True)
class SimulationConfig:
    hours: float = 4.0
    tick_minutes: int = 15
    seed: int = 0
    start_h: float = 8.0
    """Simulation hours since day 1 00:00 at the first tick (8.0 = day 1, 08:00)."""
    planning: bool = True
    """Day plans and hour blocks from the model, and continue-or-react decisions; off: the personas' routines."""
    reflection: bool = True
    sequential: bool = False
    """Send each phase's calls one at a time (the benchmark's peer) instead of together."""
    prime_prefix: bool = True
    """Batched runs: send a batch's first prompt alone for one token first, so the prefix the batch shares is
    cached before it arrives (agents/sim_calls.py)."""
    model: str = "smollm2"
    embedder: str = ""
    """The embedder's id (recorded so a folder is reopened with the embedder its vectors came from)."""
    chat_probability: float = 0.5
    """Chance (seeded) that two residents at one place talk although neither decided to react."""
    chat_cooldown_min: int = 60
    """Two residents who talked do not talk again for this long."""
    max_dialogue_turns: int = 4
    max_calls_per_agent: int = 12
    """Model calls one agent may cause in one tick (importance ratings excluded: they are one shared batch)."""
    max_tokens_per_agent: int = 1536
    """Completion tokens one agent may be granted in one tick (each call reserves its max_tokens)."""
    reflection_threshold: float = 150.0
    reflection_questions: int = 2
    reflection_insights: int = 3
    max_rated_per_tick: int = 64
    """Pending memories rated for importance per tick (all agents' in one batch); the rest wait."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.hours) and 0 < self.hours <= MAX_HOURS):
            raise InvalidInput(f"hours must be in (0, {MAX_HOURS:g}], got {self.hours}")
        if not 5 <= self.tick_minutes <= 120:
            raise InvalidInput(f"tick minutes must be in [5, 120], got {self.tick_minutes}")
        if not (math.isfinite(self.start_h) and 0 <= self.start_h < 24):
            raise InvalidInput(f"start must be a time of day 1 in hours [0, 24), got {self.start_h}")
        if not 0 <= self.seed < 2**31:
            raise InvalidInput(f"seed must be in [0, 2^31), got {self.seed}")
        if not 1 <= self.num_ticks <= MAX_TICKS:
            raise InvalidInput(f"{self.hours} h at {self.tick_minutes} min a tick is {self.num_ticks} ticks; "
                               f"a run has 1 to {MAX_TICKS} (shorten the run or lengthen the tick)")
        if not 0.0 <= self.chat_probability <= 1.0 or not 0 <= self.chat_cooldown_min <= 24 * 60:
            raise InvalidInput("chat_probability must be in [0, 1] and chat_cooldown_min in [0, 1440]")
        if not 1 <= self.max_dialogue_turns <= 12 or not 1 <= self.max_calls_per_agent <= 64:
            raise InvalidInput("max_dialogue_turns must be in [1, 12] and max_calls_per_agent in [1, 64]")
        if not 64 <= self.max_tokens_per_agent <= 16384 or not self.reflection_threshold > 0:
            raise InvalidInput("max_tokens_per_agent must be in [64, 16384] and reflection_threshold > 0")
        if not 1 <= self.reflection_questions <= 5 or not 1 <= self.reflection_insights <= 5:
            raise InvalidInput("reflection_questions and reflection_insights must be in [1, 5]")
        if not 1 <= self.max_rated_per_tick <= 1024:
            raise InvalidInput(f"max_rated_per_tick must be in [1, 1024], got {self.max_rated_per_tick}")

    @property
    def num_ticks(self) -> int:
        return int(round(self.hours * 60 / self.tick_minutes))

    def time_h(self, tick: int) -> float:
        """Simulation hours at the start of `tick` (0-based)."""
        return self.start_h + tick * self.tick_minutes / 60.0

    def identity(self) -> dict[str, Any]:
        """The options that must match to resume (see the module docstring)."""
        return {k: v for k, v in asdict(self).items() if k not in ("hours", "sequential", "prime_prefix")}


def clock_text(time_h: float) -> str:
    """"day 1 08:15" for simulation hours since day 1 00:00."""
    minutes = int(round(time_h * 60))
    day, minute = divmod(minutes, 24 * 60)
    return f"day {day + 1} {minute // 60:02d}:{minute % 60:02d}"


def town_digest(directory: Path) -> str:
    """sha256 over the town folder's TOML files (names and bytes, in name order)."""
    digest = hashlib.sha256()
    for path in sorted(Path(directory).glob("*.toml")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def fingerprint(config: SimulationConfig, town_sha: str) -> str:
    payload = json.dumps({"town": town_sha, **config.identity()}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def event_keyword(text: str, place: str) -> str:
    """The word that shows someone heard of the event: the first of EVENT_WORDS in its text, else its place."""
    lowered = text.lower()
    return next((w for w in EVENT_WORDS if w in lowered), place)
