"""Reflection: when the importance of what an agent perceived since its last reflection adds up to a threshold
(150 in the paper), it steps back and writes insights that cite their evidence.

    the most recent records (100) -> the most salient questions about them (3)
    -> retrieval per question (recency x importance x relevance, reflections included)
    -> up to `max_insights` insights per question, each citing the numbered records it rests on
    -> stored as `reflection` memories whose `evidence` holds the cited memory ids

Because retrieval returns reflections too, an insight may cite earlier insights: reflections form trees, and
each records its `depth` (1 + the deepest reflection it cites) in its metadata. A reflection is only as good
as the records it can point back to: when a reply cites no statement at all (small models never do), its
insight lines get their nearest statements as evidence (agents/insight_evidence.py), recorded as such in the
metadata (`evidence_by`); a line with no statement close enough is dropped.

Parsing and the trigger are pure functions; `reflect` is the only part that calls the model or the store, with
a fixed number of calls (one for the questions, one batch for the insights) and a token budget for each.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ragsvc.agents.insight_evidence import evidence_by_similarity, insight_lines
from ragsvc.agents.memory import MemoryStream, RetrievalOptions
from ragsvc.embed.embedder import Embedder
from ragsvc.errors import InvalidInput
from ragsvc.llm.generator import Generator, Message
from ragsvc.store.memories import MemoryRecord

_NUMBERING = re.compile(r"^\s*(?:[-*•]|\(?\d+[.):]|Q\d*[.:])\s*")
_CITATION = re.compile(r"[\[(]\s*(?:because of|evidence:?|from|see)?\s*((?:\d+(?:\s*(?:,|and)\s*|\s+))*\d+)"
                       r"(?:\s*(?:,|and))?\s*[\])]\s*\.?\s*$", re.IGNORECASE)
"""Statement numbers in brackets at the end of a line. Numbers need a separator between them: with it optional,
`(?:\d+\s*(?:,|and)?\s*)+` can split a run of digits every way, exponential in its length (minutes for a
model's line ending in "(because of" and 30 digits)."""
_FORMAT_EXAMPLE = "<an insight about them> [2, 5]"


@dataclass(frozen=True, slots=True)
class ReflectionOptions:
    threshold: float = 150.0
    """Summed importance of counted memories since the last reflection that triggers the next one."""
    counted_kinds: tuple[str, ...] = ("observation", "chat")
    num_recent: int = 100
    num_questions: int = 3
    evidence_per_question: int = 10
    max_insights: int = 5
    """Insights kept per question."""
    max_tokens: int = 256
    """Budget of each generation (the questions; each question's insights)."""

    def __post_init__(self) -> None:
        if not self.threshold > 0:
            raise InvalidInput(f"reflection threshold must be > 0 (the paper uses 150), got {self.threshold}")
        for name in ("num_recent", "num_questions", "evidence_per_question", "max_insights", "max_tokens"):
            if not 1 <= getattr(self, name) <= 1000:
                raise InvalidInput(f"{name} must be in [1, 1000], got {getattr(self, name)}")


@dataclass(frozen=True, slots=True)
class Insight:
    text: str
    evidence: tuple[int, ...]
    """Memory ids cited, in the order cited (or nearest first, for evidence found by similarity)."""
    evidence_by: str = "cited"
    """"cited": the model named the statements; "similarity": it named none, these are the nearest."""


def should_reflect(importance_since_last: float, *, threshold: float) -> bool:
    """The paper's trigger: reflect once the importance perceived since the last reflection reaches it."""
    return importance_since_last >= threshold


def numbered(records: Sequence[MemoryRecord]) -> str:
    """Records as the numbered statements the model cites by number (1-based)."""
    return "\n".join(f"{i}. {r.text}" for i, r in enumerate(records, start=1))


_ASK = ("what are the {n} most important high-level questions one could answer about {agent} and the people and "
        "things in them?")
_WORDS = re.compile(r"[a-z]+")
ECHO_SHARE = 0.8
ECHO_MIN_WORDS = 8
"""A question made of at least this many of the request's own words, and mostly of them, is the request copied
back, not a question ("What are the most important things to Lena?" is short enough to be a question)."""


def questions_prompt(agent: str, records: Sequence[MemoryRecord], *, num_questions: int) -> list[Message]:
    ask = _ASK.format(n=num_questions, agent=agent)
    return [{"role": "user", "content": (
        f"Statements about {agent}, newest first:\n{numbered(records)}\n\n"
        f"From these statements alone, {ask} Write one question per line.")}]


def echoes_request(question: str, agent: str) -> bool:
    """Whether `question` is the reflection request copied back ("What is the most important high-level question
    one could answer about Lena and the people and things in them?"): small models do that, and such a line
    asks nothing about the agent's life. Words are compared without a plural s; the agent's name is left out."""
    def stems(text: str) -> list[str]:
        return [w[:-1] if w.endswith("s") and len(w) > 3 else w for w in _WORDS.findall(text.lower())]

    name = set(stems(agent))
    asked = [w for w in stems(question) if w not in name]
    request = set(stems(_ASK.format(n="", agent="")))
    copied = sum(w in request for w in asked)
    return copied >= ECHO_MIN_WORDS and copied / len(asked) >= ECHO_SHARE


def parse_questions(text: str, *, limit: int, agent: str = "") -> list[str]:
    """Question lines, numbering stripped, duplicates and copies of the request dropped, at most `limit`."""
    found: list[str] = []
    for line in text.splitlines():
        q = _NUMBERING.sub("", line).strip()
        if q.endswith("?") and len(q) > 3 and q not in found and not echoes_request(q, agent):
            found.append(q)
    return found[:limit]


def insights_prompt(agent: str, question: str, evidence: Sequence[MemoryRecord], *, max_insights: int) -> list[Message]:
    return [{"role": "user", "content": (
        f"Statements about {agent}:\n{numbered(evidence)}\n\n"
        f"Question: {question}\n"
        f"What {max_insights} high-level insights about {agent} can you infer from the statements above? Write one "
        "insight per line and end each with the numbers of the statements it rests on in brackets, "
        f"in the form: {_FORMAT_EXAMPLE}")}]


def parse_insights(text: str, evidence_ids: Sequence[int], *, limit: int) -> list[Insight]:
    """Insights with their citations mapped from statement numbers to memory ids. Numbers outside the list are
    ignored; a line left with no valid citation is dropped."""
    found: list[Insight] = []
    for line in text.splitlines():
        body = _NUMBERING.sub("", line).strip()
        match = _CITATION.search(body)
        if match is None:
            continue
        numbers = [int(n) for n in re.findall(r"\d+", match.group(1))]
        cited = tuple(dict.fromkeys(evidence_ids[n - 1] for n in numbers if 1 <= n <= len(evidence_ids)))
        insight = _unwrapped(body[: match.start()].strip().rstrip(".,;:").strip())
        if cited and insight and not _is_placeholder(insight) and all(insight != f.text for f in found):
            found.append(Insight(text=insight, evidence=cited))
    return found[:limit]


def read_insights(text: str, evidence: Sequence[MemoryRecord], embedder: Embedder, *, limit: int) -> list[Insight]:
    """The reply's cited insights; when it cites none, its insight lines with their nearest statements."""
    cited = parse_insights(text, [r.id for r in evidence], limit=limit)
    if cited or not evidence:
        return cited
    lines = [line for line in insight_lines(text, [r.text for r in evidence], limit=limit)
             if not _is_placeholder(line)]
    return [Insight(text=line, evidence=near, evidence_by="similarity")
            for line, near in evidence_by_similarity(lines, [r.text for r in evidence], [r.id for r in evidence],
                                                     embedder)]


def _unwrapped(insight: str) -> str:
    """An insight without the angle brackets of the format line ("<Ada is a baker> [2]": a model that copies the
    form keeps them)."""
    if insight.startswith("<") and insight.endswith(">"):
        return insight[1:-1].strip().rstrip(".,;:").strip()
    return insight


def _is_placeholder(insight: str) -> bool:
    """The format line copied back instead of an insight: small models echo whatever example a prompt shows,
    which is why the prompt gives a placeholder and not a plausible sentence (those ended up stored as insights)."""
    return insight.strip("<> ").lower() == _FORMAT_EXAMPLE.split(" [", 1)[0].strip("<> ").lower()


def tree_depth(evidence: Sequence[MemoryRecord]) -> int:
    """Depth of a new reflection over `evidence`: 1 above the deepest reflection cited (observations are 0)."""
    return 1 + max((int(r.metadata.get("depth", 1)) for r in evidence if r.kind == "reflection"), default=0)


def importance_since_last(stream: MemoryStream, *, options: ReflectionOptions) -> tuple[float, int]:
    """(scored importance summed since the agent's last reflection, memories still pending among them)."""
    after = stream.tables.last_id(stream.agent, kind="reflection")
    return stream.tables.importance_since(stream.agent, after_id=after, kinds=options.counted_kinds)


def reflect(stream: MemoryStream, generator: Generator, *, now_h: float,
            options: ReflectionOptions = ReflectionOptions()) -> list[MemoryRecord]:
    """One reflection pass (unconditional: check `should_reflect` first); return the stored reflections."""
    recent = stream.recent(options.num_recent)
    if not recent:
        return []
    reply = generator.generate(questions_prompt(stream.agent, recent, num_questions=options.num_questions),
                               max_tokens=options.max_tokens)
    questions = parse_questions(reply.text, limit=options.num_questions, agent=stream.agent)
    if not questions:
        return []
    per_question = RetrievalOptions(k=options.evidence_per_question)
    evidence = [[m.memory for m in stream.retrieve(q, now_h=now_h, options=per_question).memories]
                for q in questions]
    prompts = [insights_prompt(stream.agent, q, ev, max_insights=options.max_insights)
               for q, ev in zip(questions, evidence, strict=True)]
    replies = generator.generate_many(prompts, max_tokens=options.max_tokens)
    stored: list[MemoryRecord] = []
    for question, ev, gen in zip(questions, evidence, replies, strict=True):
        by_id = {r.id: r for r in ev}
        for insight in read_insights(gen.text, ev, stream.embedder, limit=options.max_insights):
            depth = tree_depth([by_id[i] for i in insight.evidence])
            stored.append(stream.add("reflection", insight.text, at_h=now_h, evidence=insight.evidence,
                                     metadata={"question": question, "depth": depth,
                                               "evidence_by": insight.evidence_by}))
    return stored
