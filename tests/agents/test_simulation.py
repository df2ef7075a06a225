"""The simulation runner with a scripted model: one generate_many per phase, the same transcript for the same
seed, ticks that commit whole (an exception mid-tick leaves the folder as it was, and the run resumes), the
per-agent budget, and bad input refused before anything is written."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from ragsvc.agents.dialogue import on_mind
from ragsvc.agents.persona import load_town
from ragsvc.agents.plan import PlanStep
from ragsvc.agents.sim_calls import PhaseCaller
from ragsvc.agents.sim_config import SimulationConfig, clock_text, event_keyword
from ragsvc.agents.sim_social import Conversation, opener_first, turn_memories
from ragsvc.agents.sim_state import initial_states
from ragsvc.agents.sim_tick import DECIDE_STOP, Tick, World, decompose_tokens
from ragsvc.agents.simulation import TRACE_FILE, TRANSCRIPT_FILE, check_out, open_run, run_simulation
from ragsvc.agents.town import open_town
from ragsvc.errors import Conflict, InvalidInput
from ragsvc.llm.generator import Prompt
from ragsvc.llm.scripted import ScriptedGenerator

DAY_PLAN = ("07:00-08:00 wake up and have breakfast\n08:00-10:00 work at Lantern Cafe\n10:00-12:00 walk to "
            "Market Square\n12:00-13:00 lunch at Lantern Cafe\n13:00-18:00 work at Lantern Cafe\n"
            "18:00-22:00 dinner at home")


def last_text(prompt: Prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    users = [m["content"] for m in prompt if m["role"] == "user"]
    return users[-1] if users else ""


def town_reply(prompt: Prompt) -> str:
    """Everyone plans a day at Lantern Cafe, reacts by talking, mentions the party, reflects with citations."""
    text = last_text(prompt)
    if "broad strokes" in text:
        return DAY_PLAN
    if "Break this into" in text:
        return "08:00-09:00 serve coffee\n09:00-10:00 sweep the floor"
    if "continue the current activity or react" in text:
        return "react: chat with them (15 min)"
    if "next line only" in text:
        return "[end]" if "so far:\n(nobody" not in text and text.count(": ") > 6 else "Are you coming to the party?"
    if "high-level questions" in text:
        return "What does this person care about?"
    if "high-level insights" in text:
        return "They care about their neighbours [1, 2]"
    if "Rate how much" in text:
        return "8"
    raise AssertionError(f"unscripted prompt: {text[:200]!r}")


TOWN = Path(__file__).resolve().parents[2] / "agents" / "town"
CONFIG = SimulationConfig(hours=1.0, tick_minutes=15, seed=7, reflection_threshold=20.0)


def _run(out: Path, embedder, *, config: SimulationConfig = CONFIG, generator=None, stop_after=None):
    generator = generator or ScriptedGenerator(town_reply)
    summary = run_simulation(TOWN, out, config=config, generator=generator, embedder=embedder, stop_after=stop_after)
    return summary, generator


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _without_ids(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "memory_ids"} for r in rows]


class CountingScript(ScriptedGenerator):
    """Counts generate_many calls (the batches) beside the per-prompt calls the base class records."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.batches: list[int] = []

    def generate_many(self, prompts, **kwargs):
        self.batches.append(len(prompts))
        return super().generate_many(prompts, **kwargs)


def test_each_phase_is_one_generate_many_and_the_run_is_written(tmp_path, embedder):
    gen = CountingScript(town_reply)
    summary, _ = _run(tmp_path / "run", embedder, generator=gen)
    assert summary.ticks_done == summary.num_ticks == 4 and summary.num_agents == 5
    trace = _jsonl(tmp_path / "run" / TRACE_FILE)
    assert [t["tick"] for t in trace] == [0, 1, 2, 3]
    assert sum(t["batches"] for t in trace) == len(gen.batches)  # every model call went through generate_many
    assert trace[0]["calls_by_phase"]["plan"] == 5 and gen.batches[0] == 5  # five agents' day plans, one batch
    assert all(t["calls"] == sum(t["calls_by_phase"].values()) for t in trace)
    # a batch whose shared prefix is new was primed with its first prompt, for one token; later batches sharing
    # only the town preamble the first one cached were not
    assert sum(t["calls"] + t["primes"] for t in trace) == len(gen.calls)
    primes = [(p, kw) for p, kw in gen.calls if kw == {"max_tokens": 1, "seed": CONFIG.seed}]
    assert 0 < len(primes) == sum(t["primes"] for t in trace) < sum(1 for n in gen.batches if n >= 2)
    assert primes[0][0] == gen.calls[1][0]  # the day plans' batch: its first prompt, alone, then in the batch
    assert trace[0]["batch_sizes_by_phase"]["plan"] == [5]
    assert trace[0]["tokens_by_phase"]["plan"]["prompt"] > 0
    assert set(trace[0]["critical_ms_by_phase"]) == set(trace[0]["calls_by_phase"])
    rows = _jsonl(tmp_path / "run" / TRANSCRIPT_FILE)
    acts = Counter(r["tick"] for r in rows if r["action"] == "act")
    assert acts == {0: 5, 1: 5, 2: 5, 3: 5}  # one agent-step per agent per tick
    assert {"plan", "observe", "react", "say", "reflect"} <= {r["action"] for r in rows}
    assert rows[0]["clock"] == "day 1 08:00" and set(rows[0]) == {
        "tick", "time_h", "clock", "agent", "action", "location", "utterance", "partner", "memory_ids"}


def test_sequential_sends_the_same_calls_one_at_a_time(tmp_path, embedder):
    batched, sequential = CountingScript(town_reply), CountingScript(town_reply)
    _run(tmp_path / "a", embedder, generator=batched)
    _run(tmp_path / "b", embedder, generator=sequential, config=SimulationConfig(**{
        **{k: getattr(CONFIG, k) for k in CONFIG.__dataclass_fields__}, "sequential": True}))
    primes = sum(t["primes"] for t in _jsonl(tmp_path / "a" / TRACE_FILE))
    assert not sequential.batches and len(sequential.calls) == len(batched.calls) - primes
    assert not any(t["primes"] for t in _jsonl(tmp_path / "b" / TRACE_FILE))
    assert _jsonl(tmp_path / "a" / TRANSCRIPT_FILE) == _jsonl(tmp_path / "b" / TRANSCRIPT_FILE)


def test_same_seed_same_transcript_other_seed_other_pairs(tmp_path, embedder):
    _run(tmp_path / "a", embedder)
    _run(tmp_path / "b", embedder)
    a, b = _jsonl(tmp_path / "a" / TRANSCRIPT_FILE), _jsonl(tmp_path / "b" / TRANSCRIPT_FILE)
    assert a == b
    no_react = lambda p: "continue" if "or react to" in str(p) else town_reply(p)  # noqa: E731  (pairs by chance)
    runs = {}
    for seed in (1, 2, 3):
        config = SimulationConfig(hours=1.0, tick_minutes=15, seed=seed, reflection_threshold=20.0)
        _run(tmp_path / f"s{seed}", embedder, config=config, generator=ScriptedGenerator(no_react))
        runs[seed] = [(r["agent"], r["partner"]) for r in _jsonl(tmp_path / f"s{seed}" / TRANSCRIPT_FILE)
                      if r["action"] == "say"]
    assert len({tuple(v) for v in runs.values()}) > 1


def test_the_party_spreads_and_open_run_sees_it(tmp_path, embedder):
    _run(tmp_path / "run", embedder)
    town, streams, rows = open_run(tmp_path / "run", embedder=embedder)
    try:
        assert town.name == "Willow Creek" and set(streams) == {p.name for p in town.residents}
        learned = [r for r in rows if r["action"] == "learned_event"]
        assert learned and all(r["partner"] and "party" in r["utterance"].lower() for r in learned)
        for r in learned:  # the chat memory cited is the listener's and names the partner
            memory = streams[r["agent"]].get(r["memory_ids"])[0]
            assert memory.kind == "chat" and memory.metadata["partner"] == r["partner"]
        assert len({r["agent"] for r in learned}) == len(learned)  # each learns once
        assert "Mei Tanaka" not in {r["agent"] for r in learned}  # the host knew from the start
        for name, stream in streams.items():  # every memory id a row cites is that agent's
            ids = {i for r in rows if r["agent"] == name for i in r["memory_ids"]}
            assert len(stream.get(sorted(ids))) == len(ids)
    finally:
        streams.close()


class FailingScript(ScriptedGenerator):
    def __init__(self, fail_at: int) -> None:
        super().__init__(town_reply)
        self.fail_at = fail_at

    def generate(self, prompt: Prompt, **kwargs):
        if len(self.calls) == self.fail_at:
            raise RuntimeError("model server went away")
        return super().generate(prompt, **kwargs)


def test_a_failed_tick_commits_nothing_and_the_run_resumes_to_the_same_transcript(tmp_path, embedder):
    _run(tmp_path / "whole", embedder)
    whole = _jsonl(tmp_path / "whole" / TRANSCRIPT_FILE)
    _, first = _run(tmp_path / "cut", embedder, stop_after=2)
    with pytest.raises(RuntimeError, match="went away"):  # fails in the middle of tick 2
        _run(tmp_path / "cut", embedder, generator=FailingScript(fail_at=25))
    assert [t["tick"] for t in _jsonl(tmp_path / "cut" / TRACE_FILE)] == [0, 1]
    summary, _ = _run(tmp_path / "cut", embedder)
    assert summary.first_tick == 2 and summary.ticks_done == 4
    resumed = _jsonl(tmp_path / "cut" / TRANSCRIPT_FILE)
    assert _without_ids(resumed) == _without_ids(whole)  # ids differ: the failed tick used up sequence values
    assert [t["tick"] for t in _jsonl(tmp_path / "cut" / TRACE_FILE)] == [0, 1, 2, 3]
    _, streams, rows = open_run(tmp_path / "cut", embedder=embedder)
    try:
        for name, stream in streams.items():  # observations: exactly those in the transcript, none twice
            observed = sorted(i for r in rows if r["agent"] == name and r["action"] == "observe"
                              for i in r["memory_ids"])
            stored = sorted(m.id for m in stream.recent(10_000, kinds=["observation"]) if m.created_h > 8.0 - 1e-9
                            and "is at" in m.text)
            assert observed == stored
    finally:
        streams.close()


def test_the_jsonl_files_are_rebuilt_from_the_catalog(tmp_path, embedder):
    _run(tmp_path / "run", embedder, stop_after=2)
    transcript = tmp_path / "run" / TRANSCRIPT_FILE
    before = transcript.read_text()
    transcript.write_text(before + before.splitlines()[0] + "\n")  # a torn append or a duplicate
    (tmp_path / "run" / TRACE_FILE).unlink()
    _run(tmp_path / "run", embedder)
    rows = _jsonl(transcript)
    assert transcript.read_text().startswith(before) and Counter(r["tick"] for r in rows if r["action"] == "act") \
        == {0: 5, 1: 5, 2: 5, 3: 5}
    assert [t["tick"] for t in _jsonl(tmp_path / "run" / TRACE_FILE)] == [0, 1, 2, 3]


def test_budget_bounds_each_agents_calls(tmp_path, embedder):
    config = SimulationConfig(hours=0.25, tick_minutes=15, max_calls_per_agent=2, reflection_threshold=20.0)
    _, gen = _run(tmp_path / "run", embedder, config=config)
    per_agent = Counter(str(p[0]["content"]).split("You are ")[1].split(".")[0] for p, kw in gen.calls
                        if not isinstance(p, str) and p[0]["role"] == "system"
                        and kw != {"max_tokens": 1, "seed": config.seed})  # priming calls are not the agents'
    assert per_agent and max(per_agent.values()) <= 2


def test_a_folder_of_another_run_or_not_a_run_is_refused(tmp_path, embedder):
    _run(tmp_path / "run", embedder, stop_after=1)
    other = SimulationConfig(hours=1.0, tick_minutes=30, seed=7, reflection_threshold=20.0)
    with pytest.raises(Conflict, match="differs in: tick_minutes"):
        _run(tmp_path / "run", embedder, config=other)
    with pytest.raises(Conflict, match="differs in: tick_minutes"):
        check_out(TOWN, tmp_path / "run", config=other, embedder_id=embedder.id)
    town = tmp_path / "town"
    shutil.copytree(TOWN, town)
    (town / "ada-okafor.toml").write_text((town / "ada-okafor.toml").read_text().replace("33", "34"))
    with pytest.raises(Conflict, match="town_sha"):
        run_simulation(town, tmp_path / "run", config=CONFIG, generator=ScriptedGenerator(town_reply),
                       embedder=embedder)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("hello")
    with pytest.raises(Conflict, match="holds no simulation"):
        _run(tmp_path / "notes", embedder)
    assert sorted(p.name for p in (tmp_path / "notes").iterdir()) == ["a.txt"]


def test_bad_options_and_a_malformed_town_are_refused_before_writing(tmp_path, embedder):
    for bad in ({"hours": 0}, {"hours": 100}, {"tick_minutes": 3}, {"tick_minutes": 121}, {"seed": -1},
                {"start_h": 24.0}, {"hours": float("nan")}, {"hours": 0.05, "tick_minutes": 15}):
        with pytest.raises(InvalidInput):
            SimulationConfig(**bad)
    town = tmp_path / "town"
    shutil.copytree(TOWN, town)
    text = (town / "lena-fischer.toml").read_text()
    (town / "lena-fischer.toml").write_text(text.replace("age = ", "age = \"old\" #"))
    line = next(i for i, s in enumerate(text.splitlines(), 1) if s.startswith("age"))
    with pytest.raises(InvalidInput, match=rf"lena-fischer.toml:{line}: age must be"):
        run_simulation(town, tmp_path / "out", config=CONFIG, generator=ScriptedGenerator([]), embedder=embedder)
    assert not (tmp_path / "out").exists()


def test_clock_and_event_keyword():
    assert clock_text(8.25) == "day 1 08:15" and clock_text(24 + 18.0) == "day 2 18:00"
    assert event_keyword("I am hosting a harvest party at the cafe", "Lantern Cafe") == "party"
    assert event_keyword("Come to the opening", "Market Square") == "Market Square"


def test_decomposition_budget_follows_the_step_and_decisions_end_at_the_line(tmp_path, embedder):
    assert [decompose_tokens(PlanStep(480, 480 + m, "x", "day")) for m in (30, 60, 270, 600)] == [48, 64, 176, 192]
    _, gen = _run(tmp_path / "run", embedder, stop_after=1)
    decisions = [kw for p, kw in gen.calls if "continue the current activity or react" in last_text(p)
                 and kw["max_tokens"] > 1]
    blocks = [kw for p, kw in gen.calls if "Break this into" in last_text(p) and kw["max_tokens"] > 1]
    assert decisions and all(kw["stop"] == DECIDE_STOP == ("\n",) for kw in decisions)
    assert blocks and all(kw["max_tokens"] < 192 for kw in blocks)  # the routine's steps are all under 8 hours


def test_the_side_with_more_on_its_mind_opens_unless_the_other_decided_to_talk(catalog, embedder):
    town = load_town(TOWN)
    world = World(town=town, personas={p.name: p for p in town.residents}, config=CONFIG, preamble="", keyword="party",
                  streams=open_town(catalog.memory_tables(), town, embedder=embedder, now_h=8.0))
    tick = Tick(world, PhaseCaller(ScriptedGenerator([]), sequential=False, max_calls_per_agent=4,
                                   max_tokens_per_agent=512, seed=0), initial_states(town), 0)
    # Mei's seeded party outweighs Lena's seed memories: Mei opens although Lena comes first by name
    pair = opener_first(tick, Conversation("Lena Fischer", "Mei Tanaka"), reacted={})
    assert (pair.a, pair.b) == ("Mei Tanaka", "Lena Fischer") and set(pair.about) == {"Mei Tanaka", "Lena Fischer"}
    assert on_mind(pair.about["Mei Tanaka"]).metadata.get("seeded_event")
    kept = opener_first(tick, Conversation("Lena Fischer", "Mei Tanaka"), reacted={"Lena Fischer": "talk to Mei"})
    assert (kept.a, kept.b) == ("Lena Fischer", "Mei Tanaka")
    tie = opener_first(tick, Conversation("Ada Okafor", "Jonah Reyes"), reacted={})
    assert (tie.a, tie.b) == ("Ada Okafor", "Jonah Reyes")  # seed memories of equal weight: name order
    assert turn_memories(tick, pair, "Mei Tanaka", "Lena Fischer") == pair.about["Mei Tanaka"]
