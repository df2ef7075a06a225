"""A post-run reflection pass (agents/run_reflection.py) with a scripted model: every resident reflects once,
questions and insights batched across residents, insights stored with their evidence, their importance rated,
marked as post-run; a copied-back request is no question; a folder without ticks is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragsvc.agents.reflection import ReflectionOptions
from ragsvc.agents.run_reflection import reflect_run
from ragsvc.agents.sim_config import SimulationConfig
from ragsvc.agents.simulation import open_run, run_simulation
from ragsvc.errors import NotFound
from ragsvc.llm.scripted import ScriptedGenerator
from tests.agents.test_simulation import TOWN, CountingScript, last_text, town_reply

QUIET = SimulationConfig(hours=0.25, tick_minutes=15, seed=7, reflection=False)


def reflection_reply(prompt) -> str:
    text = last_text(prompt)
    if "high-level questions" in text:
        name = text.split("answer about ", 1)[1].split(" and the people", 1)[0]
        return (f"1. What does {name} care about?\n2. What is the most important high-level question one could "
                f"answer about {name} and the people and things in them?")
    if "high-level insights" in text:
        return "They care about their neighbours [1, 2]\nThey plan their day ahead [2]"
    if "Rate how much" in text:
        return "7"
    raise AssertionError(f"unscripted prompt: {text[:200]!r}")


def test_every_resident_reflects_once_with_cited_evidence(tmp_path: Path, embedder):
    run_simulation(TOWN, tmp_path / "run", config=QUIET, generator=ScriptedGenerator(town_reply), embedder=embedder)
    gen = CountingScript(reflection_reply)
    stored = reflect_run(tmp_path / "run", gen, embedder=embedder, options=ReflectionOptions(num_questions=2))
    assert len(stored) == 5 and all(len(v) == 2 for v in stored.values())  # the echoed request asked nothing
    assert gen.batches[:2] == [5, 5]  # five residents' questions together, then their five questions' insights
    _town, streams, _rows = open_run(tmp_path / "run", embedder=embedder)
    try:
        for agent, reflections in stored.items():
            for r in reflections:
                assert r.kind == "reflection" and r.importance is not None and r.importance > 1.0
                assert r.metadata["by"] == "post-run" and r.metadata["question"] == f"What does {agent} care about?"
                cited = streams[agent].tables.get(agent, list(r.evidence))
                assert len(cited) == len(r.evidence) >= 1  # the evidence is the agent's own memories
            assert streams[agent].recent(1, kinds=["reflection"])[0].id == reflections[-1].id
    finally:
        streams.close()


def test_a_folder_without_ticks_is_refused(tmp_path: Path, embedder):
    with pytest.raises(NotFound):
        reflect_run(tmp_path / "nothing", ScriptedGenerator(reflection_reply), embedder=embedder)
