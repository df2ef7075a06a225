"""Interviewing agents: each question answered in character from what the agent retrieves, under a condition.

Conditions follow the ablations of Park et al. 2023, applied at interview time by restricting what the agent
may use (the memory stream itself is the same for all of them):

    full            persona summary + the memories retrieved for the question (recency x importance x relevance)
    no-reflection   the same with reflection memories removed from what retrieval returns
    no-planning     the same with plan memories removed
    no-retrieval    the persona summary only

Removing a kind from the ranked list (instead of from the stream before scoring) leaves the other memories in
the same order; only the min-max ranges of the three terms still span the removed ones, which can shift the
cut-off at `k` by a place. Interviews read and never write: retrieval runs with `mark_accessed=False`, so
every condition, and a later interview, sees the same stream.

Questions go to the model in batches through `generate_many` (continuous batching serves a batch as one
engine step), greedy and short (`max_tokens`), so two runs over the same data give the same answers, and a
prompt that two conditions share (an ablation that removed nothing the question retrieved) is answered once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ragsvc.agents.interview_questions import Question
from ragsvc.agents.memory import MemoryStream, RetrievalOptions
from ragsvc.agents.persona import Persona
from ragsvc.errors import InvalidInput
from ragsvc.llm.generator import Generator, Message
from ragsvc.store.memories import MemoryRecord

CONDITIONS: dict[str, tuple[str, ...] | None] = {
    "full": (),
    "no-reflection": ("reflection",),
    "no-planning": ("plan",),
    "no-retrieval": None,
}
"""Each condition's excluded memory kinds; None = no memories at all."""
Progress = Callable[[int, int], None]


def parse_conditions(text: str) -> tuple[str, ...]:
    """"full,no-planning" -> ("full", "no-planning"); unknown names are refused with the list of known ones."""
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in CONDITIONS]
    if unknown or not names:
        raise InvalidInput(f"unknown interview condition(s) {unknown or text!r}; choose from {', '.join(CONDITIONS)}")
    return names


@dataclass(frozen=True, slots=True)
class InterviewOptions:
    k: int = 8
    """Memories given to the model per question."""
    pool: int = 40
    """Memories retrieved before the condition's kinds are removed (so k survive the removal)."""
    max_tokens: int = 48
    batch_size: int = 8

    def __post_init__(self) -> None:
        if not 1 <= self.k <= 50 or not self.k <= self.pool <= 500:
            raise InvalidInput(f"interview k must be in [1, 50] and pool in [k, 500], got k={self.k} pool={self.pool}")
        if not 8 <= self.max_tokens <= 512 or not 1 <= self.batch_size <= 64:
            raise InvalidInput("interview max_tokens must be in [8, 512] and batch_size in [1, 64]")


@dataclass(frozen=True, slots=True)
class Answer:
    question: Question
    condition: str
    text: str
    memory_ids: tuple[int, ...]
    """The memories the answer was conditioned on."""
    correct: bool


def context(stream: MemoryStream, question: str, *, condition: str, now_h: float,
            options: InterviewOptions) -> list[MemoryRecord]:
    """The memories an agent may use for `question` under `condition`, best first."""
    excluded = CONDITIONS[condition]
    if excluded is None or len(stream) == 0:
        return []
    found = stream.retrieve(question, now_h=now_h,
                            options=RetrievalOptions(k=options.pool, mark_accessed=False))
    return [m.memory for m in found.memories if m.memory.kind not in excluded][: options.k]


def interview_prompt(persona: Persona, memories: Sequence[MemoryRecord], question: str) -> list[Message]:
    """Who the agent is and what it recalls as the system message, the interviewer's question as the user turn
    (a small model answers a question it is asked directly; an instruction after the question gets echoed)."""
    remembered = "\n".join(f"- {m.text}" for m in memories)
    recall = f"\nWhat you remember that may matter now:\n{remembered}\n" if memories else "\n"
    return [
        {"role": "system", "content": (
            f"You are {persona.name}. {persona.describe()}{recall}"
            f"An interviewer asks you questions. Answer as {persona.name}, in the first person, in one or two "
            "short sentences.")},
        {"role": "user", "content": question},
    ]


PromptKey = tuple[str, str, tuple[int, ...]]
"""(agent, question, memory ids): what an answer's prompt is made of."""


def run_interview(questions: Sequence[Question], *, personas: Mapping[str, Persona],
                  streams: Mapping[str, MemoryStream], generator: Generator, conditions: Sequence[str],
                  now_h: float, options: InterviewOptions = InterviewOptions(),
                  skip: Callable[[Question, str], bool] = lambda q, c: False,
                  answered: dict[PromptKey, str] | None = None,
                  progress: Progress | None = None) -> list[Answer]:
    """Every question under every condition (except those `skip` names: answered before), checked.

    Answers are greedy, so a prompt already answered (the same question over the same memories: an ablation
    that removed nothing the question retrieved) is not sent again: its text is taken from `answered`, which
    this call also fills, so callers can share it across calls."""
    for c in conditions:
        parse_conditions(c)
    answered = {} if answered is None else answered
    todo = [(q, c) for c in conditions for q in questions if not skip(q, c)]
    contexts = [context(streams[q.agent], q.text, condition=c, now_h=now_h, options=options) for q, c in todo]
    keys: list[PromptKey] = [(q.agent, q.text, tuple(m.id for m in ctx)) for (q, _), ctx in zip(todo, contexts,
                                                                                                strict=True)]
    unique = list({key: i for i, key in reversed(list(enumerate(keys))) if key not in answered}.values())
    unique.sort()  # the first question of each new prompt, in order
    for start in range(0, len(unique), options.batch_size):
        batch = unique[start: start + options.batch_size]
        prompts = [interview_prompt(personas[todo[i][0].agent], contexts[i], todo[i][0].text) for i in batch]
        replies = generator.generate_many(prompts, max_tokens=options.max_tokens)
        for i, reply in zip(batch, replies, strict=True):
            answered[keys[i]] = reply.text.strip()
        if progress is not None:
            progress(min(start + options.batch_size, len(unique)), len(unique))
    if progress is not None and not unique:
        progress(0, 0)
    return [Answer(question=q, condition=c, text=answered[key], memory_ids=key[2],
                   correct=q.check.passes(answered[key])) for (q, c), key in zip(todo, keys, strict=True)]
