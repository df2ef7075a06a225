"""Replies as small models write them: plans, dialogue lines and insights, read from real SmolLM2 replies to
the simulation's prompts (tests/agents/data/smollm2_replies.json, captured once with the engine), and property
tests that any text reads into a sound plan and that plans written in many formats read back to the same times."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ragsvc.agents.dialogue import Utterance, clean_line, repeats
from ragsvc.agents.persona import load_town
from ragsvc.agents.plan import DAY_MIN, PlanStep, check_tiling, fit_children, hhmm, parse_step
from ragsvc.agents.plan_reader import DAY_STEPS, day_plan_from, merge_to, overlay, read_entry, read_plan
from ragsvc.agents.planning import day_plan_start
from ragsvc.agents.reflection import parse_insights, read_insights
from ragsvc.store.memories import MemoryRecord

REPLIES = json.loads((Path(__file__).parent / "data" / "smollm2_replies.json").read_text())["rows"]
TOWN = load_town(Path(__file__).resolve().parents[2] / "agents" / "town")
ROUTINES = {p.name: p.routine for p in TOWN.residents}


def _sound(steps: list[PlanStep]) -> None:
    for a, b in zip(steps, steps[1:], strict=False):
        assert a.end_min <= b.start_min, (a, b)
    assert all(0 <= s.start_min < s.end_min <= DAY_MIN and s.text.strip() for s in steps)


@pytest.mark.parametrize("line, expected", [
    ("1. 7:00 AM - 8:30 AM: Wake up and run", (420, 510, "Wake up and run")),
    ("**8am-9am**: breakfast", (480, 540, "breakfast")),
    ("- Wake up at 6:00 AM.", (360, None, "Wake up")),
    ("I will work until 10:00 PM.", (None, 1320, "work")),
    ("9-10:30 read", (540, 630, "read")),
    ("From 9 to 5pm work at the bakery", (540, 1020, "work at the bakery")),
    ("10-11pm sleep", (1320, 1380, "sleep")),
    ("- 19h30 dinner at Lantern Cafe", (1170, None, "dinner at Lantern Cafe")),
    ("noon - lunch", (720, None, "lunch")),
    ("- 08:30-12:30 Ada Okafor plans to open the library at 15:00 to 20:00.", (510, 750, "open the library")),
    ("2) 12:00 PM lunch", (720, None, "lunch")),
    ("12 am: a late snack", (0, None, "a late snack")),
])
def test_lines_in_the_formats_small_models_write(line, expected):
    entry = read_entry(line)
    assert entry is not None and (entry.start_min, entry.end_min, entry.text) == expected


@pytest.mark.parametrize("line", ["07:30:00:00", "Visit 3 shops", "Ada Okafor:", "25:00-26:00 nap", "13 pm tea",
                                  "- 08:00-09:00", ""])
def test_lines_without_a_time_or_an_activity_are_not_steps(line):
    assert read_entry(line) is None


def test_missing_ends_repeats_and_loops():
    text = ("Ada:\n- 07:00 wake up\n- 08:00 open the library\n- I will read until 13:00\n- 08:00 open the library\n"
            "- 15:00 catalogue\n- 15:00 catalogue\n- 1:00 nap\n- 24:00-26:00 dream")
    assert [s.clock() for s in read_plan(text, last_min=90)] == [
        "07:00-08:00 wake up", "08:00-09:30 open the library", "09:30-13:00 read", "15:00-16:30 catalogue"]


def test_day_plans_fill_in_from_the_routine_or_are_merged_down():
    routine = ROUTINES["Mei Tanaka"]
    few, source = day_plan_from("- 10:00-11:00 visit Ada at the library", routine)
    assert source == "model+routine" and any(s.start_min == 600 and s.text == "visit Ada at the library" for s in few)
    _sound(few)
    assert DAY_STEPS[0] <= len(few) <= DAY_STEPS[1]
    many = "\n".join(f"{hhmm(h * 60)}-{hhmm(h * 60 + 60)} task {h}" for h in range(6, 18))
    merged, source = day_plan_from(many, routine)
    assert source == "model" and len(merged) == DAY_STEPS[1] and merged[0].start_min == 360
    assert merged[-1].end_min == 18 * 60
    assert day_plan_from("I will have a lovely day.", routine) == (list(routine), "routine")


def test_real_smollm2_day_plans_are_read():
    sources: Counter[tuple[str, str]] = Counter()
    for row in (r for r in REPLIES if r["kind"] == "day"):
        routine = ROUTINES[row["agent"]]
        begun = day_plan_start(routine) if row["prompt"] == "usual day, begun" else ""
        steps, source = day_plan_from(begun + row["reply"], routine)
        _sound(steps)
        assert DAY_STEPS[0] <= len(steps) <= DAY_STEPS[1]
        sources[(row["prompt"], source)] += 1
    # with the plain prompt none of these parsed as "HH:MM-HH:MM" lines; read tolerantly, most give some steps
    assert sources[("plain", "model+routine")] >= 6
    assert sources[("usual day, begun", "model")] >= 6 and sources[("usual day, begun", "routine")] == 0
    mei = next(r for r in REPLIES if r["prompt"] == "usual day, begun" and r["agent"] == "Mei Tanaka")
    plan, _ = day_plan_from(day_plan_start(ROUTINES["Mei Tanaka"]) + mei["reply"], ROUTINES["Mei Tanaka"])
    assert plan[0] == ROUTINES["Mei Tanaka"][0] and plan[-1].end_min <= DAY_MIN  # the loop past 24:00 is dropped


def test_real_smollm2_hour_blocks_tile_their_parent():
    for row in (r for r in REPLIES if r["kind"] == "hour"):
        parent = parse_step(row["parent"])
        assert parent is not None
        children = fit_children(parent, read_plan(row["reply"], level="hour"), level="hour")
        check_tiling(parent, children)
    texts = {r["parent"]: [s.text for s in read_plan(r["reply"], level="hour")] for r in REPLIES if r["kind"] == "hour"}
    assert texts["07:30-12:00 open Lantern Cafe and serve the morning customers"] == [
        "open Lantern Cafe and serve the morning customers"]  # "Mei Tanaka plans to ..." read as the activity


def test_real_smollm2_dialogue_lines_are_cleaned():
    rows = [r for r in REPLIES if r["kind"] == "utterance" and r["prompt"] == "plain"]
    lines = [clean_line(r["reply"], r["agent"]) for r in rows]
    assert lines[:6] == ["I'm so glad you're here.",  # "Ada Okafor:" header, then a bullet said twice
                         "I'm fine. I'm just enjoying my breakfast.",  # after an echo of Ada's line
                         "",  # "Mei Tanaka:" then only "Lena Fischer:" labels
                         "I'm so glad you're here.",  # labelled with the first name
                         "I've been running a bakery for thirty years.",  # after a copy of the persona
                         "I'm so glad you're enjoying the Lantern Cafe."]
    # second turns with the simulation's 48 tokens: SmolLM2 echoes the first line or copies its persona, so
    # each of these conversations ends after one line (an echo ends it; nothing usable ends it)
    said = [[Utterance(*line.split(": ", 1), ()) for line in r["said"]] for r in rows[6:]]
    assert [(line, bool(line) and repeats(line, s)) for line, s in zip(lines[6:], said, strict=True)] == [
        ("I'm so glad you're here.", True), ("", False),
        ("Lena, I'm so glad you're enjoying the new life in Willow Creek. I'm so glad you're enjoying the new life "
         "in Willow Creek.", True), ("", False), ("", False)]
    assert clean_line("Tomas Berg's next line\n- Fresh bread today.", "Tomas Berg") == "Fresh bread today."


_TEXT = st.lists(st.text(alphabet=st.characters(codec="utf-8", categories=["L", "N", "P", "Zs", "S"]), max_size=8)
                 | st.sampled_from(["\n", ":", "-", " to ", "am", "pm", " until ", "12", "07:30", "9", "- ", "noon"]),
                 max_size=60).map("".join)


@settings(max_examples=300, deadline=None)
@given(_TEXT)
def test_any_text_reads_into_a_sound_plan(text):
    steps = read_plan(text)
    _sound(steps)
    routine = ROUTINES["Ada Okafor"]
    plan, _ = day_plan_from(text, routine)
    _sound(plan)
    assert DAY_STEPS[0] <= len(plan) <= DAY_STEPS[1]


_FORMATS = [
    lambda s, i: f"{hhmm(s.start_min)}-{hhmm(s.end_min)} {s.text}",
    lambda s, i: f"{i + 1}. {hhmm(s.start_min)} - {hhmm(s.end_min)}: {s.text}",
    lambda s, i: f"- **{_12h(s.start_min)} to {_12h(s.end_min)}**: {s.text}",
    lambda s, i: f"* {s.text} from {_12h(s.start_min)} until {_12h(s.end_min)}",
]


def _12h(minute: int) -> str:
    hour, m = divmod(minute % DAY_MIN, 60)
    return f"{(hour % 12) or 12}:{m:02d} {'AM' if hour < 12 else 'PM'}"


@st.composite
def _plans(draw) -> list[PlanStep]:
    bounds = sorted(draw(st.sets(st.integers(1, 23 * 4 - 1), min_size=2, max_size=9)))
    words = st.sampled_from(["bake bread", "read", "walk by the river", "serve customers", "paint", "nap"])
    spans = zip(bounds, bounds[1:], strict=False)
    return [PlanStep(a * 15, b * 15, f"{draw(words)} {i}") for i, (a, b) in enumerate(spans)]


@settings(max_examples=200, deadline=None)
@given(_plans(), st.lists(st.integers(0, len(_FORMATS) - 1), min_size=9, max_size=9), st.booleans())
def test_plans_written_in_many_formats_read_back(plan, formats, drop_ends):
    lines = [_FORMATS[f](s, i) for i, (s, f) in enumerate(zip(plan, formats, strict=False))]
    if drop_ends:  # start times only: each step then ends where the next begins
        lines = [f"- {hhmm(s.start_min)} {s.text}" for s in plan]
    read = read_plan("Here is my plan:\n" + "\n".join(lines), last_min=plan[-1].minutes)
    assert [(s.start_min, s.end_min, s.text) for s in read] == [(s.start_min, s.end_min, s.text) for s in plan]


def test_merge_and_overlay_keep_order_and_span():
    steps = [PlanStep(h * 60, h * 60 + 60, f"s{h}") for h in range(6, 20)]
    merged = merge_to(steps, 5)
    assert len(merged) == 5 and merged[0].start_min == 360 and merged[-1].end_min == 1200
    _sound(merged)
    laid = overlay(ROUTINES["Tomas Berg"], [PlanStep(600, 660, "visit Mei")])
    _sound(laid)
    assert PlanStep(600, 660, "visit Mei") in laid and laid[0] == ROUTINES["Tomas Berg"][0]


def test_begun_with_the_name_smollm2_writes_its_own_line_and_the_host_names_the_party():
    rows = [r for r in REPLIES if r["prompt"] == "line begun with the name"]
    lines = [clean_line(r["reply"], r["agent"]) for r in rows]
    said = [[Utterance(*line.split(": ", 1), ()) for line in r["said"]] for r in rows]
    assert lines == ["I'm so glad you're here.", "I'm so glad you're having a harvest party at Lantern Cafe.",
                     "I'm so glad you're celebrating a big harvest party at Lantern Cafe.", "I'm glad to hear that.",
                     "I'm so glad you're here.", "I'm so glad you're coming. I'll be there.",
                     "I'm so glad you're here."]
    assert [repeats(line, s) for line, s in zip(lines, said, strict=True)] == [False] * 6 + [True]


def test_smollm2_insights_cite_nothing_so_evidence_is_found_by_similarity(minilm):
    """SmolLM2 echoes the question, copies statements or writes uncited praise. The echoes and copies are not
    insights; the praise is kept with its nearest statements (MiniLM) as evidence, marked as found that way."""
    rows = [r for r in REPLIES if r["kind"] == "insights"]
    assert len(rows) == 5
    stored = []
    for row in rows:
        evidence = [MemoryRecord(id=100 + i, agent=row["agent"], kind="observation", text=t, created_h=0.0,
                                 last_accessed_h=0.0, importance=5.0, evidence=(), metadata={})
                    for i, t in enumerate(row["evidence"])]
        assert parse_insights(row["reply"], [r.id for r in evidence], limit=3) == []  # nothing cited
        stored.append(read_insights(row["reply"], evidence, minilm, limit=3))
    assert [len(found) for found in stored] == [0, 3, 0, 0, 0]
    for insight in stored[1]:
        assert insight.text.startswith("Jonah Reyes is a") and insight.evidence_by == "similarity"
        assert insight.evidence == (103,)  # the only statement that names Jonah (his conversation)


def test_a_reply_line_with_long_runs_of_spaces_is_read_at_once():
    # The word before a time was found with a leading \s*: quadratic in each run of spaces.
    [step] = read_plan("Plan:\n- " + " " * 50_000 + "walk the dog" + " " * 50_000 + "at 9am until 10am")
    assert step.clock() == "09:00-10:00 walk the dog"
