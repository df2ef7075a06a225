"""Dialogue between two agents, each turn conditioned on what the speaker remembers about the other.

Before each utterance the speaker retrieves from its own stream with the other's name and the last line said
as the query, so what it knows (a party it was invited to, an argument last week) can come up. The dialogue
ends when a speaker ends it ("[end]") or after `max_turns`. Afterwards each side remembers the conversation as
a `chat` memory naming the partner, which is how news spreads through a town: the party invitation one agent
heard becomes something it can mention to the next.
"""

from __future__ import annotations

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
    remembered = "\n".join(f"- {m.text}" for m in memories) or "- (nothing in particular)"
    so_far = "\n".join(f"{u.speaker}: {u.text}" for u in said) or "(nobody has spoken yet)"
    return [{"role": "user", "content": (
        f"{speaker.summary}\nWhat {speaker.name} remembers that may matter now:\n{remembered}\n\n"
        f"Conversation between {speaker.name} and {other} so far:\n{so_far}\n\n"
        f"Write {speaker.name}'s next line only, one or two sentences. If the conversation is over, "
        f"write {END}.")}]


def clean_line(text: str, speaker: str) -> str:
    """The utterance without a repeated "Name:" prefix, quotes or a trailing second speaker's line."""
    line = text.strip().split("\n")[0].strip()
    if line.lower().startswith(speaker.lower() + ":"):
        line = line[len(speaker) + 1:].strip()
    return line.strip('"').strip()


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
        if line:
            said.append(Utterance(speaker.name, line, tuple(m.id for m in memories)))
        if ended or not line:
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
