"""One reflection pass over a simulation run's residents after the run, with any model.

A simulation reflects when an agent's importance adds up to the threshold, with the run's own model; a small
model rarely writes a usable question or insight, so its runs store few reflections and an interview cannot
tell what reflection adds. This pass lets a stronger model reflect once for every resident of a finished (or
interrupted) run, over the same memories, the same prompts and parsers as the simulation (agents/reflection.py),
batched across residents: every resident's questions in one generate_many, then every question's insights in
one more, then the new reflections' importance in one batch. Each insight is stored as a reflection memory at
the run's last clock time, citing its evidence, with `metadata.by = "post-run"` and the model's name, so an
interview or a reader can tell these from the simulation's own. Everything commits in one catalog transaction.

Resuming a run after this pass continues with these reflections in the residents' memories (they are
memories like any other); to keep a run as simulated, reflect over a copy of its folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ragsvc.agents.importance import ImportanceScorer
from ragsvc.agents.memory import MemoryStream, RetrievalOptions
from ragsvc.agents.reflection import (
    ReflectionOptions,
    insights_prompt,
    parse_questions,
    questions_prompt,
    read_insights,
    tree_depth,
)
from ragsvc.agents.simulation import open_run
from ragsvc.embed.embedder import Embedder
from ragsvc.errors import NotFound
from ragsvc.llm.generator import Generator
from ragsvc.store.memories import MemoryRecord


@dataclass(frozen=True, slots=True)
class Asked:
    agent: str
    question: str
    evidence: list[MemoryRecord]


def reflect_run(path: Path, generator: Generator, *, embedder: Embedder,
                options: ReflectionOptions | None = None) -> dict[str, list[MemoryRecord]]:
    """Every resident of the run in `path` reflects once; returns the stored reflections by resident."""
    options = options or ReflectionOptions()
    _town, streams, transcript = open_run(path, embedder=embedder)
    try:
        if not transcript:
            raise NotFound(f"{path} has no committed tick yet; run the simulation before reflecting over it")
        now_h = max(float(r["time_h"]) for r in transcript)
        with streams.catalog.memory_tables().atomic():
            stored = _reflect_all(streams, generator, now_h=now_h, options=options)
            _rate([m for ms in stored.values() for m in ms], streams, generator)
        return {a: [streams[a].tables.get(a, [m.id])[0] for m in ms] for a, ms in stored.items()}
    finally:
        streams.close()


def _reflect_all(streams: Mapping[str, MemoryStream], generator: Generator, *, now_h: float,
                 options: ReflectionOptions) -> dict[str, list[MemoryRecord]]:
    recent = {a: s.recent(options.num_recent) for a, s in sorted(streams.items())}
    agents = [a for a, r in recent.items() if r]
    replies = generator.generate_many([questions_prompt(a, recent[a], num_questions=options.num_questions)
                                       for a in agents], max_tokens=options.max_tokens)
    per_question = RetrievalOptions(k=options.evidence_per_question)
    asked = [Asked(a, q, [m.memory for m in streams[a].retrieve(q, now_h=now_h, options=per_question).memories])
             for a, reply in zip(agents, replies, strict=True)
             for q in parse_questions(reply.text, limit=options.num_questions, agent=a)]
    asked = [x for x in asked if x.evidence]
    insights = generator.generate_many([insights_prompt(x.agent, x.question, x.evidence,
                                                        max_insights=options.max_insights) for x in asked],
                                       max_tokens=options.max_tokens)
    stored: dict[str, list[MemoryRecord]] = {a: [] for a in streams}
    model = str(getattr(generator, "model", ""))
    for x, reply in zip(asked, insights, strict=True):
        stream, by_id = streams[x.agent], {r.id: r for r in x.evidence}
        for insight in read_insights(reply.text, x.evidence, stream.embedder, limit=options.max_insights):
            stored[x.agent].append(stream.add(
                "reflection", insight.text, at_h=now_h, evidence=insight.evidence,
                metadata={"question": x.question, "depth": tree_depth([by_id[i] for i in insight.evidence]),
                          "evidence_by": insight.evidence_by, "by": "post-run", "model": model}))
    return stored


def _rate(reflections: list[MemoryRecord], streams: Mapping[str, MemoryStream], generator: Generator) -> None:
    """The new reflections' importance, rated like every memory of a simulation (one batch)."""
    if not reflections:
        return
    scores = ImportanceScorer(generator).score_many([m.text for m in reflections])
    by_agent: dict[str, list[tuple[int, float]]] = {}
    for m, s in zip(reflections, scores, strict=True):
        by_agent.setdefault(m.agent, []).append((m.id, min(10.0, max(1.0, s.expected))))
    for agent, rated in by_agent.items():
        streams[agent].set_importance([i for i, _ in rated], [v for _, v in rated])
