"""Dialogue between two agents, each turn conditioned on what the speaker remembers about the other.

Before each utterance the speaker retrieves from its own stream with the other's name and the last line said
as the query, so what it knows (a party it was invited to, an argument last week) can come up. The dialogue
ends when a speaker ends it ("[end]") or after `max_turns`. Afterwards each side remembers the conversation as
a `chat` memory naming the partner, which is how news spreads through a town: the party invitation one agent
heard becomes something it can mention to the next.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ragsvc.agents.memory import MemoryStream, RetrievalOptions
from ragsvc.errors import InvalidInput
from ragsvc.llm.generator import Generator, Message
from ragsvc.store.memories import MemoryRecord

END = "[end]"


@dataclass(frozen=True, slots=True)
class Speaker:
    name: str
    summary: str
    """Who they are, in a sentence or two (from the persona)."""
    stream: MemoryStream


@dataclass(frozen=True, slots=True)
class Utterance:
    speaker: str
    text: str
    recalled: tuple[int, ...]
    """Ids of the memories the speaker retrieved before saying it."""


@dataclass(frozen=True, slots=True)
class DialogueOptions:
    max_turns: int = 8
    max_tokens: int = 80
    """Budget of one utterance."""
    memories_per_turn: int = 5
    transcript_chars: int = 1200
    """The longest transcript kept in each side's chat memory (the rest is cut, marked with ...)."""

    def __post_init__(self) -> None:
        if not 1 <= self.max_turns <= 50 or not 8 <= self.max_tokens <= 1024 or not 0 <= self.memories_per_turn <= 50:
            raise InvalidInput("dialogue needs max_turns in [1, 50], max_tokens in [8, 1024] and "
                               "memories_per_turn in [0, 50]")


def utterance_prompt(speaker: Speaker, other: str, memories: Sequence[MemoryRecord],
                     said: Sequence[Utterance]) -> list[Message]:
    """The request for the speaker's next line, the reply begun with "Name:": without it a small model opens
    its reply by writing the conversation out again from the top (echoing the other side's line as its own),
    with it it writes the line. The recalled memory that matters most (`on_mind`) is named once more just
    before the request: a 135M model given only the list greets ("I'm so glad you're here") whatever it holds,
    and with that line it brings the memory up (the party its host is planning, news a listener heard)."""
    remembered = "\n".join(f"- {m.text}" for m in memories) or "- (nothing in particular)"
    so_far = "\n".join(f"{u.speaker}: {u.text}" for u in said) or "(nobody has spoken yet)"
    focus = on_mind(memories)
    mind = f"What is most on {speaker.name}'s mind: {focus.text}\n" if focus is not None else ""
    return [{"role": "user", "content": (
        f"{speaker.summary}\nWhat {speaker.name} remembers that may matter now:\n{remembered}\n\n"
        f"Conversation between {speaker.name} and {other} so far:\n{so_far}\n\n"
        f"{mind}Write {speaker.name}'s next line only, one or two sentences. If the conversation is over, "
        f"write {END}.")},
        {"role": "assistant", "content": f"{speaker.name}:"}]


def on_mind(memories: Sequence[MemoryRecord]) -> MemoryRecord | None:
    """The most important recalled memory that is not a plan (plans read "plan for day 1: 08:00-09:00 ...",
    which a small model copies as its line); the earliest recalled of equals. None when nothing qualifies or
    none is rated yet."""
    rated = [m for m in memories if m.kind != "plan" and m.importance is not None]
    return max(rated, key=lambda m: m.importance or 0.0, default=None)


_LABEL = re.compile(r"^(?P<label>[A-Z][\w.'-]*(?: [A-Z][\w.'-]*){0,3}(?:'s next (?:line|sentence))?)\s*:"
                    r"\s*(?P<rest>.*)$")
_PERSONA_COPY = re.compile(r"^\S+(?: \S+)?,? (?:is )?\d{1,3}(?: years old)?\b")


def clean_line(text: str, speaker: str) -> str:
    """The speaker's utterance in a reply, as small models write it: the first line that is the speaker's
    (unlabelled, or labelled with their full or first name), skipping a bare "Name:" header, lines labelled with
    someone else's name (an echo of the other side, or the model writing both parts), and a copy of the
    speaker's persona description ("Tomas Berg is 58 years old"); bullets and quotes removed, a sentence said
    twice in a row said once. Empty when the reply has no such line."""
    names = {speaker.lower(), speaker.split()[0].lower()}
    for raw in text.splitlines():
        line = re.sub(r"^\s*(?:[-*•]|\d{1,2}[.)])\s+", "", raw).strip()
        labelled = _LABEL.match(line)
        if labelled is not None:
            label = re.sub(r"'s next (?:line|sentence)$", "", labelled.group("label")).lower()
            if label not in names:
                continue
            line = labelled.group("rest").strip()
        line = line.strip('"').strip()
        if re.fullmatch(r"[\w .'-]+'s next (?:line|sentence)\W*", line, re.IGNORECASE):  # a header without colon
            continue
        if not re.search(r"[A-Za-z]{2}", line) or _PERSONA_COPY.match(line) and line.lower().startswith(tuple(names)):
            continue
        return _once(line)
    return ""


def repeats(line: str, said: Sequence[Utterance]) -> bool:
    """Whether `line` says again what was said before (the same words, or an earlier line with more after it):
    a small model echoing the other side, which ends the conversation rather than continuing it."""
    key = " ".join(re.findall(r"[a-z0-9']+", line.lower()))
    return any(key.startswith(" ".join(re.findall(r"[a-z0-9']+", u.text.lower()))) for u in said)


def _once(line: str) -> str:
    """`line` with a sentence repeated right after itself said once ("I'm glad. I'm glad." -> "I'm glad.")."""
    sentences = re.findall(r"[^.!?]+[.!?]*\s*", line)
    kept = [s for i, s in enumerate(sentences) if i == 0 or s.strip() != sentences[i - 1].strip()]
    return "".join(kept).strip()


def converse(a: Speaker, b: Speaker, generator: Generator, *, now_h: float,
             options: DialogueOptions = DialogueOptions()) -> list[Utterance]:
    """A dialogue that `a` opens; both sides store it as a chat memory. Returns what was said."""
    said: list[Utterance] = []
    speakers = (a, b)
    for turn in range(options.max_turns):
        speaker, other = speakers[turn % 2], speakers[(turn + 1) % 2]
        query = f"{other.name} {said[-1].text}" if said else other.name
        memories = [] if not options.memories_per_turn else [
            m.memory for m in speaker.stream.retrieve(
                query, now_h=now_h, options=RetrievalOptions(k=options.memories_per_turn)).memories]
        reply = generator.generate(utterance_prompt(speaker, other.name, memories, said), max_tokens=options.max_tokens)
        ended = END in reply.text
        line = clean_line(reply.text.replace(END, ""), speaker.name)
        repeated = repeats(line, said)  # a small model's echo: the conversation is over
        if line and not repeated:
            said.append(Utterance(speaker.name, line, tuple(m.id for m in memories)))
        if ended or not line or repeated:
            break
    if said:
        for me, partner in ((a, b), (b, a)):
            me.stream.add("chat", chat_memory(partner.name, said, limit=options.transcript_chars), at_h=now_h,
                          metadata={"partner": partner.name, "turns": len(said)})
    return said


def chat_memory(partner: str, said: Sequence[Utterance], *, limit: int) -> str:
    """The transcript as one memory text, cut to `limit` characters."""
    text = f"Conversation with {partner}: " + " ".join(f"{u.speaker}: {u.text}" for u in said)
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."
