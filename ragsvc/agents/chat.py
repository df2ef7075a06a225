"""Talking with an agent: the prompt that grounds a reply in what the agent remembers, the reply itself, and the
memory an exchange leaves. No store and no HTTP here: agents/chat_service.py runs sessions with these.

A reply is grounded the way the paper's agents answer an interviewer: the agent retrieves from its own stream
with the user's message as the query (recency x importance x relevance, agents/memory.py), and the prompt gives
its persona, the session's last turns, and the message preceded by those memories (numbered by id, so a reply
can be traced to them). The order persona, history, memories + message keeps every prompt of a session an
extension of the previous one up to its last exchange, so the engine's prefix cache serves that part.

The session clock. Memories live on a simulation clock (hours), chats on the wall clock. A session starts at
the agent's latest memory time (so a chat after a simulation continues where it stopped, and recency still
ranks the simulation's memories by their age) and advances one simulated hour per wall hour since the session
began: talk to an agent tomorrow and today's chat has decayed by a day. The clock never runs backwards for an
agent (`session_clock_h` takes the agent's latest access as a floor), because retrieval refuses a time before
a memory's last access.
"""

from __future__ import annotations

import logging
from collections import abc
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass

from ragsvc.agents.persona import Persona
from ragsvc.errors import InvalidInput, RagsvcError, UpstreamError, UpstreamTimeout
from ragsvc.llm.generator import Generation, GenerationChunk, Generator, Message, TokenLogprob, streamed_usage
from ragsvc.llm.repetition import RepeatWatch, without_repeat
from ragsvc.store.memories import MemoryRecord

logger = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 2000
"""The longest message a user may send (a chat line, not a document: the prompt must fit a small model)."""


@dataclass(frozen=True, slots=True)
class ChatOptions:
    memories_k: int = 5
    """Memories retrieved for each message and put in the prompt."""
    max_tokens: int = 160
    """Budget of one reply."""
    history_turns: int = 6
    """The session's latest utterances (user and agent) replayed in the prompt."""
    memory_chars: int = 300
    """Each memory is cut to this many characters in the prompt."""
    history_chars: int = 1500
    """The replayed history is cut (oldest first) to this many characters."""
    transcript_chars: int = 1200
    """The longest text of the chat memory an exchange becomes."""

    def __post_init__(self) -> None:
        bounds = {"memories_k": (0, 20), "max_tokens": (1, 1024), "history_turns": (0, 50),
                  "memory_chars": (40, 4000), "history_chars": (0, 20000), "transcript_chars": (80, 10000)}
        for name, (low, high) in bounds.items():
            value = getattr(self, name)
            if not low <= value <= high:
                raise InvalidInput(f"{name} must be in [{low}, {high}], got {value}")


@dataclass(frozen=True, slots=True)
class HistoryLine:
    role: str
    """"user" or "agent"."""
    content: str


def check_message(content: str) -> str:
    """The message stripped; InvalidInput when it is empty or longer than MAX_MESSAGE_CHARS."""
    text = content.strip()
    if not text:
        raise InvalidInput("content is empty; send what you want to say to the agent")
    if len(text) > MAX_MESSAGE_CHARS:
        raise InvalidInput(f"content has {len(text)} characters; a message may have at most {MAX_MESSAGE_CHARS} "
                           "(split it into several messages)")
    return text


def session_clock_h(*, start_h: float, created_s: float, now_s: float, floor_h: float) -> float:
    """Simulation hours now: the session's start plus the wall hours since it began, never before `floor_h`."""
    return max(start_h + max(0.0, now_s - created_s) / 3600.0, floor_h)


def _cut(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def instructions(persona: Persona, *, user: str) -> str:
    """The system message: the same for every message of every session `user` has with this agent."""
    return (f"You are {persona.name}. {persona.describe()}\n"
            f"You are talking with {user}. Reply as {persona.name}, in the first person, in one to three sentences. "
            "Use what you remember (listed before each message); do not make up memories you do not have.")


def recalled_message(message: str, memories: Sequence[MemoryRecord], *, options: ChatOptions) -> str:
    """The user's message with the memories retrieved for it listed first (by id)."""
    remembered = "\n".join(f"[{m.id}] {_cut(m.text, options.memory_chars)}" for m in memories)
    return f"(What you remember that may matter now:\n{remembered or 'nothing in particular'})\n\n{message}"


def chat_prompt(persona: Persona, *, user: str, memories: Sequence[MemoryRecord], history: Sequence[HistoryLine],
                message: str, options: ChatOptions = ChatOptions()) -> list[Message]:
    """The persona and instructions, the latest history that fits `options.history_chars` (oldest dropped
    first), then the message with its retrieved memories. The memories ride with the message rather than in the
    system message so that everything before it (persona, instructions, earlier turns, all unchanged from the
    previous message) is a prefix the engine's cache can serve."""
    kept: list[Message] = []
    budget = options.history_chars
    for line in reversed(history[-options.history_turns:] if options.history_turns else []):
        if len(line.content) > budget:
            break
        budget -= len(line.content)
        kept.append({"role": "assistant" if line.role == "agent" else "user", "content": line.content})
    system: Message = {"role": "system", "content": instructions(persona, user=user)}
    return [system, *reversed(kept), {"role": "user", "content": recalled_message(message, memories,
                                                                                   options=options)}]


def clean_reply(text: str, agent: str) -> str:
    """The reply without a "Name:" prefix the model may repeat, or surrounding quotes."""
    reply = text.strip()
    for prefix in (agent, agent.split(" ")[0]):
        if prefix and reply.lower().startswith(prefix.lower() + ":"):
            reply = reply[len(prefix) + 1:].strip()
            break
    return reply.strip('"').strip()


def exchange_memory(*, user: str, agent: str, message: str, reply: str, limit: int) -> str:
    """What the agent remembers of one exchange: a chat memory naming who said what."""
    return _cut(f"Conversation with {user}: {user}: {message} {agent}: {reply}", limit)


OnText = Callable[[str], None]
"""Receives each piece of the reply as it is generated; raising ReplyCancelled from it stops the reply."""


class ReplyCancelled(Exception):
    """Raised by an `on_text` callback to stop a reply (its client went away); nothing is written then."""


def _chunks(generator: Generator, prompt: list[Message], max_tokens: int
            ) -> abc.Generator[GenerationChunk, None, None]:
    """The reply's stream as a generator, so that closing it closes the model's stream (aborting the request)."""
    yield from generator.stream(prompt, max_tokens=max_tokens)


def generate_reply(generator: Generator, prompt: list[Message], *, max_tokens: int,
                   on_text: OnText | None = None) -> Generation:
    """Stream the reply, handing each piece of text to `on_text` as it comes. A model that starts repeating
    itself is stopped there and the reply ends before the repeat (finish_reason "repetition"; llm/repetition.py),
    so the agent neither waits out the loop nor remembers it. A model that fails or times out is an
    UpstreamError (502) / UpstreamTimeout (504); a bad request stays an InvalidInput (400)."""
    text, tokens, finish, usage, pieces = "", list[TokenLogprob](), "stop", None, 0
    looping = RepeatWatch()
    try:
        with closing(_chunks(generator, prompt, max_tokens)) as chunks:  # closing it aborts the request
            for chunk in chunks:
                text += chunk.text
                pieces += bool(chunk.text)
                tokens.extend(chunk.tokens)
                if on_text is not None and chunk.text:
                    on_text(chunk.text)
                if chunk.finish_reason is not None:
                    finish = chunk.finish_reason
                if chunk.usage is not None:
                    usage = chunk.usage
                if chunk.finish_reason is None and looping(text):
                    break
    except (InvalidInput, UpstreamError, ReplyCancelled):
        raise
    except TimeoutError as exc:
        raise UpstreamTimeout("the model did not answer in time; retry, or send a lower max_tokens") from exc
    except RagsvcError as exc:
        raise UpstreamError(f"the model failed while replying: {exc.message}") from exc
    except Exception as exc:  # the engine or server died mid-reply: a bad gateway, not our 500
        logger.exception("generator failed while replying")
        raise UpstreamError(f"the model failed while replying ({type(exc).__name__}: {exc})") from exc
    usage = streamed_usage(usage, tokens=len(tokens), pieces=pieces)
    text, repeated = without_repeat(text)
    return Generation(text=text, tokens=tuple(tokens), finish_reason="repetition" if repeated else finish,
                      usage=usage)
