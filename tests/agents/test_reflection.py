"""Reflection: the trigger, question and insight parsing, and a scripted pass whose insights cite their evidence
and grow a tree (a reflection citing a reflection)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ragsvc.agents.insight_evidence import insight_lines, nearest_evidence
from ragsvc.agents.memory import MemoryStream
from ragsvc.agents.reflection import (
    _CITATION,
    ReflectionOptions,
    echoes_request,
    importance_since_last,
    parse_insights,
    parse_questions,
    reflect,
    should_reflect,
)
from ragsvc.errors import InvalidInput
from ragsvc.llm.scripted import ScriptedGenerator


def test_trigger_fires_at_the_threshold():
    assert not should_reflect(149.9, threshold=150)
    assert should_reflect(150.0, threshold=150)
    with pytest.raises(InvalidInput):
        ReflectionOptions(threshold=0)


def test_questions_and_insights_are_parsed_with_their_citations():
    text = "1. What does Mei care about?\n2) Who is Tomas?\nnot a question\n- What does Mei care about?\n3. Why?"
    assert parse_questions(text, limit=3) == ["What does Mei care about?", "Who is Tomas?", "Why?"]
    # the request copied back (SmolLM2 does) is no question about the agent; a short question in its words is
    echoed = ("What is the most important high-level question one could answer about Lena Fischer and the people "
              "and things in them?")
    kept = "What are the most important things to Lena?"
    assert echoes_request(echoed, "Lena Fischer") and not echoes_request(kept, "Lena Fischer")
    assert parse_questions(f"1. {echoed}\n2. {kept}", limit=3, agent="Lena Fischer") == [kept]
    # the format line's angle brackets, copied around a real insight, are not part of it
    assert [i.text for i in parse_insights("1. <Ada bakes for the village.> [1]", [7], limit=3)] == [
        "Ada bakes for the village"]
    ids = [101, 102, 103]
    reply = ("1. Mei loves hosting people [1, 3]\n"
             "2. Tomas is reliable (because of 2)\n"
             "3. Nothing cited here\n"
             "4. Out of range only [7]\n"
             "5. Mixed citations [3, 9, 3].")
    insights = parse_insights(reply, ids, limit=5)
    assert [(i.text, i.evidence) for i in insights] == [
        ("Mei loves hosting people", (101, 103)), ("Tomas is reliable", (102,)), ("Mixed citations", (103,))]
    assert len(parse_insights(reply, ids, limit=1)) == 1



def test_the_format_placeholder_copied_back_is_not_an_insight():
    reply = "<an insight about them> [2, 5]\nAn insight about them [1]\nMei hosts the party [1]"
    assert [i.text for i in parse_insights(reply, [11, 12, 13, 14, 15], limit=5)] == ["Mei hosts the party"]

def _seed(stream: MemoryStream) -> list[int]:
    texts = ["Mei invited me to the harvest party", "Mei bakes cakes for her customers",
             "Mei knows everyone's usual order", "Tomas delivers bread to Mei"]
    return [stream.add("observation", t, at_h=float(i), importance=2.0 * (i + 1)).id
            for i, t in enumerate(texts)]


def test_importance_since_the_last_reflection(catalog, embedder):
    stream = MemoryStream(catalog.memory_tables(), "ada", embedder=embedder)
    _seed(stream)  # importance 2 + 4 + 6 + 8
    stream.add("observation", "a pending one", at_h=5.0)
    options = ReflectionOptions(threshold=20)
    assert importance_since_last(stream, options=options) == (20.0, 1)
    stream.add("reflection", "Mei is the heart of the village", at_h=6.0, importance=5.0)
    assert importance_since_last(stream, options=options) == (0.0, 0)


def test_a_scripted_pass_stores_cited_insights_and_reflections_form_trees(catalog, embedder):
    stream = MemoryStream(catalog.memory_tables(), "ada", embedder=embedder)
    _seed(stream)
    first = ScriptedGenerator(["1. What is Mei like?\n2. How do Mei and Tomas know each other?",
                               "Mei is generous [1, 2]\nMei is sociable [1, 3]", "Tomas supplies Mei's cafe [4]"])
    stored = reflect(stream, first, now_h=10.0, options=ReflectionOptions(num_questions=2, evidence_per_question=4))
    assert [r.text for r in stored] == ["Mei is generous", "Mei is sociable", "Tomas supplies Mei's cafe"]
    for r in stored:
        assert r.kind == "reflection" and r.importance is None and r.metadata["depth"] == 1
        cited = stream.get(r.evidence)
        assert len(cited) == len(r.evidence) and all(c.kind == "observation" for c in cited)
    # the insight prompts numbered the retrieved statements; the citation [4] maps to the 4th of them
    prompt = first.calls[2][0][0]["content"]
    fourth = next(line for line in prompt.splitlines() if line.startswith("4. "))
    assert stream.get(stored[2].evidence)[0].text == fourth[3:]

    second = ScriptedGenerator(["What does Ada think of Mei?",
                                "Mei is generous and sociable [1, 2, 3]"])
    stored2 = reflect(stream, second, now_h=11.0, options=ReflectionOptions(num_questions=1, evidence_per_question=3))
    assert len(stored2) == 1 and stored2[0].metadata["depth"] == 2
    assert any(c.kind == "reflection" for c in stream.get(stored2[0].evidence))


def test_a_reply_without_questions_stores_nothing(catalog, embedder):
    stream = MemoryStream(catalog.memory_tables(), "ada", embedder=embedder)
    _seed(stream)
    assert reflect(stream, ScriptedGenerator(["I cannot answer that."]), now_h=5.0) == []
    assert reflect(MemoryStream(catalog.memory_tables(), "nobody", embedder=embedder),
                   ScriptedGenerator([]), now_h=5.0) == []


def test_insight_lines_leave_out_echoes_headers_questions_and_copies():
    statements = ["Mei invited me to the harvest party", "Tomas delivers bread to Mei"]
    reply = ("Insights:\n1. What is the most important insight you could infer about Mei?\n"
             "2. The most important insight you could infer from the statements is: nothing\n"
             "3. Mei invited me to the harvest party.\n- Mei loves bringing her neighbours together.\n"
             "- Mei loves bringing her neighbours together.\n- Too short.\n"
             "- Tomas and Mei depend on each other every morning.")
    assert insight_lines(reply, statements, limit=5) == [
        "Mei loves bringing her neighbours together", "Tomas and Mei depend on each other every morning"]
    assert insight_lines(reply, statements, limit=1) == ["Mei loves bringing her neighbours together"]


def test_nearest_evidence_by_hand():
    statements = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [-1.0, 0.0]], dtype=np.float32)
    insight = np.array([0.8, 0.6], dtype=np.float32)  # cosines 0.8, 0.96, 0.6, -0.8
    assert nearest_evidence(insight, statements, [10, 11, 12, 13]) == (11, 10, 12)
    assert nearest_evidence(insight, statements, [10, 11, 12, 13], max_evidence=2) == (11, 10)
    assert nearest_evidence(insight, statements, [10, 11, 12, 13], min_similarity=0.9) == (11,)
    assert nearest_evidence(insight, statements[:0], []) == ()


def test_an_uncited_reply_is_stored_with_evidence_found_by_similarity(catalog, embedder):
    stream = MemoryStream(catalog.memory_tables(), "ada", embedder=embedder)
    ids = _seed(stream)
    gen = ScriptedGenerator(["What is Mei like?", "1. Mei bakes cakes for all her customers\n2. Zebras run fast at"
                             " noon today\n3. What else is there?"])
    stored = reflect(stream, gen, now_h=10.0, options=ReflectionOptions(num_questions=1, evidence_per_question=4))
    assert [r.text for r in stored] == ["Mei bakes cakes for all her customers"]  # the zebras resemble nothing
    assert stored[0].metadata["evidence_by"] == "similarity" and stored[0].evidence[0] == ids[1]
    cited = reflect(stream, ScriptedGenerator(["What is Mei like?", "Mei is generous [1]"]), now_h=11.0,
                    options=ReflectionOptions(num_questions=1, evidence_per_question=4))
    assert cited[0].metadata["evidence_by"] == "cited"


_OLD_CITATION = re.compile(r"[\[(]\s*(?:because of|evidence:?|from|see)?\s*((?:\d+\s*(?:,|and)?\s*)+)[\])]\s*\.?\s*$",
                           re.IGNORECASE)


_NOISE = st.sampled_from(["1", "2", "12", " ", ",", "and", "(", ")", "[", "]", ".", "x", "because of", "see "])
_CITED = st.tuples(st.sampled_from(["(", "[", "x"]), st.sampled_from(["", "because of ", "see ", "Evidence: "]),
                   st.lists(st.tuples(st.sampled_from(["1", "2", "12", "7"]),
                                      st.sampled_from(["", " ", ",", ", ", " and ", "and", " , "])),
                            min_size=1, max_size=5),
                   st.sampled_from([")", "]", "", "x"]), st.sampled_from(["", ".", " "]))


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.lists(_NOISE, max_size=10).map("".join),
                 _CITED.map(lambda c: c[0] + c[1] + "".join(n + sep for n, sep in c[2]) + c[3] + c[4])))
def test_citations_are_read_as_the_old_pattern_read_short_lines(tail):
    line = "Mei hosts people " + tail
    old = _OLD_CITATION.search(line)  # exponential only on long digit runs, so a fine oracle here
    new = _CITATION.search(line)
    assert (new and (new.start(), re.findall(r"\d+", new.group(1)))) == (
        old and (old.start(), re.findall(r"\d+", old.group(1))))
    cited = parse_insights(line, list(range(100, 200)), limit=5)
    if old is None:
        assert cited == []
    else:
        numbers = [int(n) for n in re.findall(r"\d+", old.group(1)) if 1 <= int(n) <= 100]
        assert [c.evidence for c in cited] in ([], [tuple(dict.fromkeys(99 + n for n in numbers))])


def test_a_line_ending_in_a_long_run_of_digits_is_read_at_once():
    # "(because of" and 40 digits: the old pattern split the run every way (hours of backtracking).
    assert parse_insights("Ada likes tea (because of " + "1" * 40, [7, 8, 9], limit=3) == []
    assert parse_insights("Ada likes tea (because of 1 2 3)", [7, 8, 9], limit=3)[0].evidence == (7, 8, 9)
