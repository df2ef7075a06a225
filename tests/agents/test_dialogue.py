"""Dialogue conditioned on memories, with scripted lines: each turn retrieves what the speaker remembers about
the other, the dialogue is bounded, and both sides remember it (how a party invitation spreads)."""

from __future__ import annotations

from ragsvc.agents.dialogue import (
    DialogueOptions,
    Speaker,
    chat_memory,
    clean_line,
    converse,
    on_mind,
    utterance_prompt,
)
from ragsvc.agents.memory import MemoryStream
from ragsvc.llm.scripted import ScriptedGenerator


def _speakers(catalog, embedder):
    mei = MemoryStream(catalog.memory_tables(), "Mei Tanaka", embedder=embedder)
    lena = MemoryStream(catalog.memory_tables(), "Lena Fischer", embedder=embedder)
    invite = mei.add("observation", "I am hosting a harvest party at Lantern Cafe on day 2 at 18:00; Lena Fischer "
                     "should come", at_h=1.0, importance=7.0)
    mei.add("observation", "the espresso machine needs descaling", at_h=1.5, importance=2.0)
    lena.add("observation", "Lena Fischer is painting the old mill", at_h=1.0, importance=4.0)
    return Speaker("Mei Tanaka", "Mei owns Lantern Cafe.", mei), Speaker("Lena Fischer", "Lena paints.", lena), invite


def test_turns_are_conditioned_on_memories_and_both_sides_remember(catalog, embedder):
    mei, lena, invite = _speakers(catalog, embedder)
    script = ScriptedGenerator(["Mei Tanaka: Lena! Come to my harvest party on day 2 at six.",
                                "I would love to come. [end]"])
    said = converse(mei, lena, script, now_h=2.0, options=DialogueOptions(memories_per_turn=1))
    assert [(u.speaker, u.text) for u in said] == [
        ("Mei Tanaka", "Lena! Come to my harvest party on day 2 at six."), ("Lena Fischer", "I would love to come.")]
    assert said[0].recalled == (invite.id,)  # Mei's best memory about Lena is the invitation
    assert "harvest party" in script.calls[0][0][0]["content"]
    heard = lena.stream.recent(1, kinds=["chat"])[0]
    assert heard.metadata == {"partner": "Mei Tanaka", "turns": 2} and "harvest party" in heard.text
    assert mei.stream.recent(1, kinds=["chat"])[0].metadata["partner"] == "Lena Fischer"


def test_dialogue_stops_at_max_turns(catalog, embedder):
    mei, lena, _ = _speakers(catalog, embedder)
    script = ScriptedGenerator(lambda prompt: f"And another thing ({len(script.calls)}).")
    said = converse(mei, lena, script, now_h=2.0, options=DialogueOptions(max_turns=3, memories_per_turn=0))
    assert len(said) == 3 and len(script.calls) == 3


def test_a_line_said_again_ends_the_dialogue(catalog, embedder):
    mei, lena, _ = _speakers(catalog, embedder)
    script = ScriptedGenerator(["Nice weather.", "Lena Fischer: Indeed.", "Mei Tanaka: Nice weather. Nice weather."])
    said = converse(mei, lena, script, now_h=2.0, options=DialogueOptions(max_turns=8, memories_per_turn=0))
    assert [u.text for u in said] == ["Nice weather.", "Indeed."] and len(script.calls) == 3


def test_an_empty_first_line_stores_nothing(catalog, embedder):
    mei, lena, _ = _speakers(catalog, embedder)
    assert converse(mei, lena, ScriptedGenerator(["[end]"]), now_h=2.0) == []
    assert mei.stream.recent(10, kinds=["chat"]) == []


def test_lines_are_cleaned_and_transcripts_cut():
    assert clean_line('Mei Tanaka: "Hello there."\nLena Fischer: hi', "Mei Tanaka") == "Hello there."
    from ragsvc.agents.dialogue import Utterance

    text = chat_memory("Lena", [Utterance("Mei", "x" * 100, ())], limit=50)
    assert len(text) == 50 and text.endswith("...")


def test_the_seeded_party_spreads_through_a_conversation(tmp_path, catalog, minilm):
    """The shipped village with the real MiniLM: only the host knows of the party until she tells someone."""
    from pathlib import Path

    from ragsvc.agents.persona import load_town
    from ragsvc.agents.town import knows_of, open_town

    town = load_town(Path(__file__).resolve().parents[2] / "agents" / "town")
    streams = open_town(catalog.memory_tables(), town, embedder=minilm, index_root=tmp_path / "idx")
    assert {name for name, s in streams.items() if knows_of(s, town, now_h=1.0, keyword="party")} == {"Mei Tanaka"}
    mei = Speaker("Mei Tanaka", "Mei owns Lantern Cafe.", streams["Mei Tanaka"])
    ada = Speaker("Ada Okafor", "Ada is the librarian.", streams["Ada Okafor"])
    script = ScriptedGenerator(["Ada, I'm hosting a harvest party at the cafe on day 2 at six. Will you come?",
                                "Of course, I'll be there. [end]"])
    converse(mei, ada, script, now_h=2.0)
    assert "harvest party" in script.calls[0][0][0]["content"]  # Mei recalled her plan when talking to Ada
    knowing = {name for name, s in streams.items() if knows_of(s, town, now_h=3.0, keyword="party")}
    assert knowing == {"Mei Tanaka", "Ada Okafor"}
    again = open_town(catalog.memory_tables(), town, embedder=minilm)  # reopening does not seed twice
    assert len(again["Mei Tanaka"]) == len(streams["Mei Tanaka"])


def test_the_most_important_recalled_memory_is_named_before_the_request(catalog, embedder):
    stream = MemoryStream(catalog.memory_tables(), "Mei Tanaka", embedder=embedder)
    seen = stream.add("observation", "Lena Fischer is at Lantern Cafe", at_h=1.0, importance=4.0)
    party = stream.add("observation", "I am hosting a harvest party on day 2", at_h=0.0, importance=7.0)
    plan = stream.add("plan", "plan for day 1: 08:00-12:00 open the cafe", at_h=1.0, importance=9.0)
    pending = stream.add("observation", "Ada is at the library", at_h=1.0)
    assert on_mind([seen, plan, party, pending]) == party  # plans and unrated memories are passed over
    assert on_mind([seen, stream.add("chat", "Conversation with Ada", at_h=1.0, importance=4.0)]) == seen
    assert on_mind([plan, pending]) is None
    me = Speaker("Mei Tanaka", "Mei owns Lantern Cafe.", stream)
    request = utterance_prompt(me, "Lena Fischer", [seen, party], [])[0]["content"]
    assert "What is most on Mei Tanaka's mind: I am hosting a harvest party on day 2\nWrite Mei" in request
    assert "most on" not in utterance_prompt(me, "Lena Fischer", [], [])[0]["content"]
