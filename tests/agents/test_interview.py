"""Interviews: questions and checks derived from a small town's files and memories (pure), the ablations'
filtering on a real memory stream, scoring with intervals over scripted answers, one real SmolLM2 answer."""

from __future__ import annotations

import dataclasses
import re
import tempfile
from pathlib import Path

import pytest

from ragsvc.agents.interview import (
    CONDITIONS,
    InterviewOptions,
    context,
    interview_prompt,
    parse_conditions,
    run_interview,
)
from ragsvc.agents.interview_check import Check, content_words, mentions, polarity, word_match
from ragsvc.agents.interview_questions import (
    CATEGORIES,
    NOTHING,
    day_plan,
    event_keywords,
    generate_questions,
    knows_event,
)
from ragsvc.agents.interview_report import render_markdown
from ragsvc.agents.interview_score import answer_record, summarize, verdicts
from ragsvc.agents.persona import load_town
from ragsvc.agents.town import open_town
from ragsvc.errors import InvalidInput
from ragsvc.evals.stats import bootstrap_ci, paired_difference_ci, paired_permutation_test
from ragsvc.llm.scripted import ScriptedGenerator
from ragsvc.store.memories import MemoryRecord

TOWN_TOML = """name = "Pebble Bay"
[[places]]
name = "Harbour Inn"
kind = "inn"
[[places]]
name = "Fish Market"
kind = "market"
[[places]]
name = "Dune Houses"
kind = "homes"
[event]
host = "Oskar Lund"
text = "I am organising a lantern regatta at Harbour Inn on day 3 from 19:00 and everyone is welcome."
place = "Harbour Inn"
day = 3
start = "19:00"
"""
RESIDENTS = {
    "oskar": ("Oskar Lund", 50, ["jovial", "loud"], "Oskar keeps Harbour Inn and brews cider.",
              ["I keep Harbour Inn.", "Rosa Mendes sells me fish for the inn's stew."],
              ["06:00-07:00 wake up", "07:00-12:00 clean the rooms", "12:00-15:00 cook stew",
               "15:00-18:00 brew cider", "18:00-22:00 serve guests"]),
    "rosa": ("Rosa Mendes", 36, ["blunt", "early riser"], "Rosa is a fisher who sells her catch at Fish Market.",
             ["I fish every morning.", "Oskar Lund buys fish for his stew."],
             ["04:00-05:00 wake up", "05:00-09:00 fish off the pier", "09:00-13:00 sell fish at Fish Market",
              "13:00-16:00 mend nets", "16:00-21:00 read at home"]),
    "ivo": ("Ivo Petrov", 23, ["shy", "bookish"], "Ivo repairs clocks and keeps to himself.",
            ["I repair clocks in my workshop."],
            ["08:00-09:00 wake up", "09:00-12:00 repair clocks", "12:00-13:00 lunch",
             "13:00-17:00 sort spare gears", "17:00-22:00 read astronomy books"]),
}


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(f'"{i}"' for i in items) + "]"


@pytest.fixture()
def town_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "town"
    folder.mkdir()
    (folder / "town.toml").write_text(TOWN_TOML)
    for key, (name, age, traits, summary, memories, routine) in RESIDENTS.items():
        (folder / f"{key}.toml").write_text(
            f'name = "{name}"\nage = {age}\ntraits = {_toml_list(traits)}\nsummary = "{summary}"\n'
            f'home = "Dune Houses"\nmemories = {_toml_list(memories)}\nroutine = {_toml_list(routine)}\n')
    return folder


def _records(town, extra=None):
    """Seed memories as records (the event in its host's), plus `extra` {agent: [(kind, text, metadata)]}."""
    out, next_id = {}, 1
    for p in town.residents:
        rows = [("observation", m, {}) for m in p.memories]
        if p.name == town.event.host:
            rows.append(("observation", town.event.text, {"seeded_event": True}))
        rows += (extra or {}).get(p.name, [])
        out[p.name] = [MemoryRecord(next_id + i, p.name, kind, text, 0.0, 0.0, 5.0, (), meta)
                       for i, (kind, text, meta) in enumerate(rows)]
        next_id += len(rows)
    return out


def _by_id(questions):
    return {q.id: q for q in questions}


# -- checks ----------------------------------------------------------------------------------------------------

def test_word_forms_match_and_unrelated_words_do_not():
    assert word_match("bakery", "baker") and word_match("librarian", "library") and word_match("painter", "painting")
    assert word_match("cafe", "cafes") and not word_match("run", "running") and not word_match("bread", "brew")
    assert mentions("I'm the town's baker.", ["bakery", "cider"]) == ["bakery"]
    assert content_words("Rosa sells her catch at the market every morning", exclude=["Rosa Mendes"]) == (
        "sells", "catch", "market")


@pytest.mark.parametrize(("answer", "expected"), [
    ("Yes, Oskar told me about it.", "yes"), ("No, I haven't heard anything.", "no"),
    ("I don't think so. Yes, maybe later.", "no"), ("Of course I know him!", "yes"),
    ("I'm not aware of anything. Yes", "no"), ("The regatta sounds fun.", None), ("I am not sure.", "no"),
    ("I have not heard of it.", "no"), ("I do know him.", "yes")])
def test_polarity_reads_the_first_signal_of_the_first_sentence(answer, expected):
    assert polarity(answer) == expected


def test_a_check_needs_the_polarity_and_one_keyword():
    check = Check(keywords=("regatta", "lantern"), polarity="yes")
    assert check.passes("Yes, the lantern regatta!") and not check.passes("Yes, something.")
    assert not check.passes("No, nothing.") and Check(polarity="no").passes("No, I have not.")
    with pytest.raises(ValueError, match="needs keywords"):
        Check()


# -- questions from the data -----------------------------------------------------------------------------------

def test_questions_cover_every_category_for_every_resident(town_dir):
    town = load_town(town_dir)
    questions = generate_questions(town, _records(town), now_h=8.0)
    categories = {p.name: {q.category for q in questions if q.agent == p.name} for p in town.residents}
    assert categories["Oskar Lund"] == categories["Rosa Mendes"] == set(CATEGORIES)
    assert categories["Ivo Petrov"] == {"self-knowledge", "memory", "plans"}  # knows nobody: none to react to
    assert len({q.id for q in questions}) == len(questions)
    capped = generate_questions(town, _records(town), now_h=8.0, max_per_category=1)
    assert all(sum(q.agent == p.name and q.category == c for q in capped) <= 1
               for p in town.residents for c in CATEGORIES)


def test_checks_come_from_personas_event_and_plans(town_dir):
    town = load_town(town_dir)
    q = _by_id(generate_questions(town, _records(town), now_h=8.0))
    assert event_keywords(town) == ("organising", "lantern", "regatta", "welcome")
    assert q["oskar-lund/self-knowledge/0"].check.keywords == ("keeps", "harbour", "inn", "brews", "cider")
    assert q["oskar-lund/self-knowledge/1"].check.keywords == ("jovial", "loud")
    assert q["rosa-mendes/memory/0"].text == "Who is Oskar Lund?"
    assert q["rosa-mendes/memory/0"].check.keywords == ("buys", "fish", "stew")
    # the host heard of the event, the others did not: a yes with the event's words vs a plain no
    assert q["oskar-lund/memory/1"].check == Check(keywords=event_keywords(town), polarity="yes")
    assert q["ivo-petrov/memory/0"].check == Check(polarity="no")
    # who knows whom: Ivo's memories name nobody
    knows = {x.text: x.check.polarity for x in q.values() if x.agent == "Ivo Petrov" and x.text.startswith("Do you")}
    assert set(knows.values()) == {"no"} and len(knows) == 2
    # plans from the routine (no plan memories): the second and fourth step
    assert q["rosa-mendes/plans/0"].text == "What will you be doing at 07:00 on day 1?"
    assert q["rosa-mendes/plans/0"].check.keywords == ("pier",)  # "fish": a fisher's description says it already
    assert q["rosa-mendes/plans/2"].check.keywords == ("read", "home")  # 19:00 on the event's day, not invited
    assert q["oskar-lund/plans/2"].check.keywords == ("organising", "lantern", "regatta", "welcome", "harbour", "inn")
    assert "ivo-petrov/reactions/0" not in q  # nothing to tell anyone
    assert q["oskar-lund/reflections/0"].check.keywords == ("rosa",)


def test_a_conversation_carrying_the_event_and_stored_plans_change_the_expected_answers(town_dir):
    town = load_town(town_dir)
    heard = {"Ivo Petrov": [
        ("chat", "Conversation with Oskar Lund: Oskar Lund: Come to the regatta on day 3!", {"partner": "Oskar Lund"}),
        ("plan", "plan for day 2: 06:00-09:00 sleep in", {"day": 2, "level": "day", "start_min": 360,
                                                          "end_min": 540, "reaction": False}),
        ("plan", "plan for day 2: 09:00-14:00 polish a tower clock", {"day": 2, "level": "day", "start_min": 540,
                                                                      "end_min": 840, "reaction": False}),
        ("reflection", "Ivo finds Oskar's inn too noisy for reading", {"question": "What does Ivo think of the inn?"}),
    ]}
    records = _records(town, heard)
    assert knows_event("Ivo Petrov", records["Ivo Petrov"], town, NOTHING)
    assert day_plan(town.residents[0], records["Ivo Petrov"], default_day=1)[::2] == (2, True)
    q = _by_id(generate_questions(town, records, now_h=30.0))
    assert q["ivo-petrov/memory/0"].check.polarity == "yes"
    assert q["ivo-petrov/plans/0"].text == "What will you be doing at 11:30 on day 2?"
    assert q["ivo-petrov/plans/0"].check.keywords == ("polish", "tower")  # he "repairs clocks": not a plan
    assert "regatta" in q["ivo-petrov/reactions/0"].check.keywords
    assert q["ivo-petrov/reflections/0"].text == "What does Ivo think of the inn?"
    assert q["ivo-petrov/reflections/0"].check.keywords == ("finds", "oskar", "noisy", "reading")
    knows = [x for x in q.values() if x.agent == "Ivo Petrov" and x.text.startswith("Do you know Oskar Lund?")]
    assert knows[0].check.polarity == "yes"


# -- ablations on a real stream --------------------------------------------------------------------------------

@pytest.fixture()
def streams(town_dir, catalog, embedder):
    town = load_town(town_dir)
    streams = open_town(catalog.memory_tables(), town, embedder=embedder)
    ivo = streams["Ivo Petrov"]
    ivo.add("plan", "plan for day 1: 09:00-12:00 repair clocks for Oskar Lund", at_h=1.0, importance=3.0)
    ivo.add("reflection", "Oskar Lund seems to trust Ivo with clocks", at_h=2.0, importance=6.0,
            evidence=[ivo.recent(1)[0].id])
    ivo.add("chat", "Conversation with Oskar Lund: Oskar Lund: my clock stopped.", at_h=2.0, importance=4.0)
    return town, streams


def test_each_condition_removes_what_it_ablates_and_nothing_is_written(streams):
    town, by_name = streams
    ivo = by_name["Ivo Petrov"]
    before = [(r.id, r.last_accessed_h) for r in ivo.recent(100)]
    options = InterviewOptions(k=10, pool=40)
    kinds = {c: {m.kind for m in context(ivo, "Oskar Lund clocks", condition=c, now_h=5.0, options=options)}
             for c in CONDITIONS}
    assert kinds["full"] == {"observation", "plan", "reflection", "chat"}
    assert kinds["no-reflection"] == {"observation", "plan", "chat"}
    assert kinds["no-planning"] == {"observation", "reflection", "chat"}
    assert kinds["no-retrieval"] == set()
    assert [(r.id, r.last_accessed_h) for r in ivo.recent(100)] == before  # interviews never mark access
    full = context(ivo, "Oskar Lund clocks", condition="full", now_h=5.0, options=InterviewOptions(k=2, pool=40))
    assert len(full) == 2
    assert parse_conditions("full, no-planning,full") == ("full", "no-planning")
    with pytest.raises(InvalidInput, match="no-reflection"):
        parse_conditions("full,no-memory")


def test_prompt_gives_persona_and_only_the_given_memories(streams):
    town, _ = streams
    ivo = town.residents[0] if town.residents[0].name == "Ivo Petrov" else town.residents[1]
    bare = interview_prompt(ivo, [], "Who are you?")
    assert ivo.summary in bare[0]["content"] and "remember" not in bare[0]["content"]
    assert bare[1] == {"role": "user", "content": "Who are you?"}


# -- scoring with scripted answers -----------------------------------------------------------------------------

def _echo(prompt) -> str:
    """A scripted 'model' that answers yes and repeats what it was reminded of: right exactly when the
    memories it was given hold the answer."""
    remembered = re.findall(r"^- (.*)$", prompt[0]["content"], re.MULTILINE)
    return ("Yes. " + " ".join(remembered)) if remembered else "I am not sure."


def test_scores_per_category_and_condition_with_intervals(streams):
    town, by_name = streams
    records = {name: s.recent(100) for name, s in by_name.items()}
    questions = generate_questions(town, records, now_h=5.0)
    personas = {p.name: p for p in town.residents}
    seen, model = [], ScriptedGenerator(_echo)
    answers = run_interview(questions, personas=personas, streams=by_name, generator=model,
                            conditions=list(CONDITIONS), now_h=5.0, options=InterviewOptions(batch_size=5),
                            progress=lambda done, total: seen.append((done, total)))
    assert len(answers) == 4 * len(questions)
    # a prompt two conditions share (only Ivo has a reflection and plans) is sent once
    prompts = {(a.question.agent, a.question.text, a.memory_ids) for a in answers}
    assert len(model.calls) == len(prompts) < len(answers) and seen[-1] == (len(prompts), len(prompts))
    rows = [answer_record(a) for a in answers]
    summary = summarize(rows, interval=bootstrap_ci, paired_interval=paired_difference_ci,
                        paired_test=paired_permutation_test)
    acc = summary["accuracy"]
    # with no memories the echo model hedges ("not sure"): right exactly on the questions whose answer is no
    bare = [a for a in answers if a.condition == "no-retrieval"]
    assert [a.correct for a in bare] == [a.question.check.polarity == "no" for a in bare]
    assert 0 < acc["all"]["no-retrieval"]["mean"] < acc["all"]["full"]["mean"]
    for category in summary["categories"]:
        for condition, cell in acc[category].items():
            values = [r["correct"] for r in rows if r["condition"] == condition
                      and (category == "all" or r["category"] == category)]
            assert cell["mean"] == round(sum(values) / len(values), 3) and cell["n"] == len(values)
            assert cell["ci95"][0] <= cell["mean"] <= cell["ci95"][1]
    d = summary["vs_full"]["no-retrieval"]["all"]
    assert d["diff"] == pytest.approx(acc["all"]["full"]["mean"] - acc["all"]["no-retrieval"]["mean"], abs=0.002)
    assert d["ci95"][0] > 0 and d["p"] < 0.05
    assert any("no-retrieval" in line and "full beats it" in line for line in verdicts(summary))
    # resuming: a skip for answered (question, condition) pairs leaves nothing to do
    done = {(a.question.id, a.condition) for a in answers}
    again = run_interview(questions, personas=personas, streams=by_name, generator=ScriptedGenerator([]),
                          conditions=list(CONDITIONS), now_h=5.0, skip=lambda q, c: (q.id, c) in done)
    assert again == []
    report = render_markdown(summary, {"model": "scripted", "command": "ragsvc agents interview RUN"}, rows)
    assert "| reflections |" in report and "no-retrieval" in report
    from_stored = [r for r in rows if r["source"].startswith("reflection memory")]
    assert from_stored and "Reflection questions drawn from stored reflections (1 agent(s): Ivo Petrov)" in report
    without = render_markdown(summary, {"model": "scripted"}, [r for r in rows if r not in from_stored])
    assert "No reflection question came from a stored reflection" in without


@pytest.mark.slow
def test_smollm2_answers_one_question_in_character(streams):
    from ragsvc.llm.in_process import InProcessGenerator
    from ragsvc.serving.config import EngineConfig

    town, by_name = streams
    records = {name: s.recent(100) for name, s in by_name.items()}
    question = next(q for q in generate_questions(town, records, now_h=5.0) if q.id == "oskar-lund/self-knowledge/0")
    cache = Path(tempfile.gettempdir()) / "ragsvc-test-models"
    with InProcessGenerator.from_config(EngineConfig(model="smollm2", cache_dir=str(cache), num_kv_blocks=64)) as gen:
        [answer] = run_interview([question], personas={p.name: p for p in town.residents}, streams=by_name,
                                 generator=gen, conditions=["full"], now_h=5.0)
    assert answer.text and answer.memory_ids  # the full condition answered from retrieved memories
    assert answer.correct == question.check.passes(answer.text)


def test_the_transcript_says_who_talked_and_who_learned_of_the_event(town_dir):
    town = load_town(town_dir)
    transcript = [
        {"tick": 0, "agent": "Rosa Mendes", "action": "say", "partner": "Ivo Petrov", "utterance": "Morning!"},
        {"tick": 1, "agent": "Ivo Petrov", "action": "learned_event", "partner": "Oskar Lund", "utterance": "..."},
        {"tick": 1, "agent": "Ivo Petrov", "action": "act", "partner": "", "utterance": "repair clocks"},
    ]
    q = {x.text: x.check for x in generate_questions(town, _records(town), now_h=9.0, transcript=transcript)
         if x.agent == "Ivo Petrov"}
    assert q["Do you know Rosa Mendes? Answer yes or no first."].polarity == "yes"
    assert q["Do you know Oskar Lund? Answer yes or no first."].polarity == "no"  # told, but never a line said
    assert q[next(t for t in q if t.startswith("Have you heard"))].polarity == "yes"
    assert q["Who in Pebble Bay do you know best, and why?"].keywords == ("rosa",)


def test_reflections_give_distinct_questions_most_important_first(town_dir):
    town = load_town(town_dir)
    insights = [("reflection", f"Ivo trusts Oskar with clock number {i}", {"question": f"Whom does Ivo trust? {i % 7}"})
                for i in range(8)]
    records = _records(town, {"Ivo Petrov": insights})
    records["Ivo Petrov"] = [dataclasses.replace(r, importance=float(r.id)) for r in records["Ivo Petrov"]]
    asked = [q.text for q in generate_questions(town, records, now_h=9.0)
             if q.agent == "Ivo Petrov" and q.source.startswith("reflection")]
    assert asked == ["Whom does Ivo trust? 0", "Whom does Ivo trust? 6", "Whom does Ivo trust? 5",
                     "Whom does Ivo trust? 4", "Whom does Ivo trust? 3"]  # the 5 most important distinct ones


def test_more_questions_per_category_from_the_persona_the_plan_and_what_was_seen(town_dir):
    town = load_town(town_dir)
    seen = {"Ivo Petrov": [("observation", "Rosa Mendes is at Fish Market: sell fish", {}),
                           ("observation", "Rosa Mendes is at Harbour Inn: mend nets", {})]}
    records = _records(town, seen)
    records["Ivo Petrov"] = [dataclasses.replace(r, created_h=float(r.id)) for r in records["Ivo Petrov"]]
    q = [x for x in generate_questions(town, records, now_h=8.0) if x.agent == "Ivo Petrov"]
    by_text = {x.text: x for x in q}
    assert by_text["How old are you?"].check.keywords == ("23",)
    assert by_text["Where do you live?"].check.keywords == ("dune", "houses")
    last = by_text["Where did you last see Rosa Mendes, and what were they doing?"]
    assert last.category == "memory" and last.check.keywords == ("harbour", "inn", "mend", "nets")  # the latest
    assert "Where did you last see Oskar Lund, and what were they doing?" not in by_text  # never saw him
    assert by_text["Rosa Mendes waves at you. What do you say to them?"].category == "reactions"
    plans = [x for x in q if x.category == "plans"]
    assert len(plans) == 1 + len(RESIDENTS["ivo"][5])  # every step of the day, and the event's hour
    assert len({x.id for x in q}) == len(q)


def test_a_reflection_question_tests_what_the_persona_does_not_already_say(town_dir):
    town = load_town(town_dir)
    echoed = ("What is the most important high-level question one could answer about Ivo Petrov and the people and "
              "things in them?")
    insights = [("reflection", "Ivo repairs clocks", {"question": "What does Ivo do?"}),  # his summary, restated
                ("reflection", "Ivo owes Oskar Lund a favour for the tower bell", {"question": echoed}),
                ("reflection", "Ivo enjoys quiet mornings by the dunes", {"question": echoed})]
    records = _records(town, {"Ivo Petrov": insights})
    asked = {q.text: q.check.keywords for q in generate_questions(town, records, now_h=9.0)
             if q.agent == "Ivo Petrov" and q.source.startswith("reflection")}
    # the restatement asks nothing the persona does not answer; a copied-back request becomes a question about
    # whom the insight names (or the agent itself)
    assert asked == {"What have you come to think about Oskar Lund?": ("owes", "favour", "tower", "bell"),
                     "What have you come to think about yourself?": ("enjoys", "quiet", "mornings", "dunes")}
