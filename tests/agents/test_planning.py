"""Plans: parsing, decomposition that always tiles its parent, continue-or-react, and re-planning from the
moment of a reaction, with scripted replies where a small model could not be relied on."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ragsvc.agents.memory import MemoryStream
from ragsvc.agents.plan import (
    PlanStep,
    check_tiling,
    fit_children,
    parse_clock,
    parse_step,
    parse_steps,
    splice,
    split_evenly,
    step_at,
)
from ragsvc.agents.planning import Decision, Planner, PlanningOptions, parse_decision
from ragsvc.errors import InvalidInput
from ragsvc.llm.scripted import ScriptedGenerator

DAY = """Here is the plan:
1. 07:00-08:00 wake up and have breakfast
2. 08:00-12:00 open the cafe
3) 12:00-13:00 lunch
- 13:00-17:00 serve customers
- 17:00-18:00 close the cafe
18:00-22:00: dinner and a walk
12:30-12:45 this one overlaps and is dropped
"""
ROUTINE = parse_steps("06:00-07:00 a\n07:00-12:00 b\n12:00-13:00 c\n13:00-18:00 d\n18:00-22:00 e")


def test_step_lines_parse_and_bad_ones_are_skipped():
    steps = parse_steps(DAY)
    assert [s.clock() for s in steps][:2] == ["07:00-08:00 wake up and have breakfast", "08:00-12:00 open the cafe"]
    assert len(steps) == 6 and steps[-1].text == "dinner and a walk"
    assert parse_step("25:00-26:00 nap") is None and parse_step("10:00-09:00 back in time") is None
    assert parse_step("10:70-11:00 x") is None and parse_step("nothing") is None
    assert parse_clock("24:00") == 1440
    with pytest.raises(InvalidInput):
        parse_clock("7am")


@pytest.mark.parametrize("children", [
    [],
    [PlanStep(600, 615, "a"), PlanStep(615, 700, "b")],  # 'b' too long: split
    [PlanStep(610, 620, "late start"), PlanStep(640, 660, "gap before")],  # gaps filled, ends stretched
    [PlanStep(600, 602, "too short"), PlanStep(602, 612, "b"), PlanStep(605, 611, "overlapped")],
    [PlanStep(500, 800, "spills over the parent")],
])
def test_fit_children_always_tiles_the_parent_within_limits(children):
    parent = PlanStep(600, 660, "work on the painting")
    fitted = fit_children(parent, children, level="action")
    check_tiling(parent, fitted)
    assert all(5 <= c.minutes <= 15 and c.level == "action" for c in fitted)


def test_even_split_and_lookup():
    parts = split_evenly(PlanStep(480, 600, "study"), level="hour")
    assert [(p.start_min, p.end_min) for p in parts] == [(480, 540), (540, 600)]
    assert step_at(parts, 540) is parts[1] and step_at(parts, 600) is None


def test_splice_cuts_the_current_step_and_pushes_later_ones():
    steps = [PlanStep(480, 540, "a"), PlanStep(540, 600, "b"), PlanStep(600, 660, "c"), PlanStep(660, 720, "d")]
    out = splice(steps, PlanStep(550, 610, "talk to Mei"))
    assert [s.clock() for s in out] == ["08:00-09:00 a", "09:00-09:10 b", "09:10-10:10 talk to Mei",
                                        "10:10-11:00 c", "11:00-12:00 d"]


def test_decisions_parse():
    assert parse_decision("continue") == Decision(react=False)
    assert parse_decision("React: go and congratulate Mei (20 min).") == Decision(True, "go and congratulate Mei", 20)
    assert parse_decision("react: help Tomas carry the flour") == Decision(True, "help Tomas carry the flour", None)
    assert parse_decision("react:   ") == Decision(react=False)


def _planner(catalog, embedder, script) -> Planner:
    stream = MemoryStream(catalog.memory_tables(), "mei", embedder=embedder)
    return Planner(stream, ScriptedGenerator(script), summary="Mei owns Lantern Cafe.", routine=ROUTINE,
                   options=PlanningOptions(context_memories=3))


def test_day_plan_decomposes_to_hours_then_actions_and_is_remembered(catalog, embedder):
    planner = _planner(catalog, embedder, [
        DAY,
        "08:00-09:00 bake muffins\n09:00-10:30 serve breakfast\n10:30-12:00 clean the tables",
        "08:00-08:10 preheat the oven\n08:10-08:20 mix the batter\n08:20-08:40 bake\n08:40-09:00 cool and plate",
    ])
    day = planner.plan_day(day=1, now_h=7.0)
    assert planner.generator.calls[0][0][-1] == {"role": "assistant", "content": "06:00-07:00 a\n"}  # begun for it
    assert [s.text for s in day[:2]] == ["a", "wake up and have breakfast"] and len(day) == 7
    hours = planner.decompose([day[2]], level="hour", day=1, now_h=7.0)
    check_tiling(day[2], hours)
    assert [h.minutes for h in hours] == [60, 45, 45, 45, 45]  # 90-minute blocks split in two
    actions = planner.decompose([hours[0]], level="action", day=1, now_h=7.0)
    check_tiling(hours[0], actions)
    assert [a.minutes for a in actions] == [10, 10, 10, 10, 10, 10]
    plans = planner.stream.recent(100, kinds=["plan"])
    assert len(plans) == len(day) + len(hours) + len(actions)
    assert {p.metadata["level"] for p in plans} == {"day", "hour", "action"}


def test_an_unusable_day_plan_falls_back_to_the_routine(catalog, embedder):
    planner = _planner(catalog, embedder, ["I will have a nice day!"])
    assert planner.plan_day(day=1, now_h=0.0) == ROUTINE


def test_continue_or_react_and_replan_from_that_moment(catalog, embedder):
    planner = _planner(catalog, embedder, ["continue", "react: talk to Tomas about the party (30 min)"])
    steps = parse_steps("08:00-09:00 serve breakfast\n09:00-10:00 bake\n10:00-11:00 clean", level="hour")
    planner.stream.add("observation", "Tomas mentioned a party", at_h=8.0, importance=6.0)
    calm = planner.decide("a bird sings", current=steps[0], now_h=8.5)
    assert not calm.react and planner.replan(steps, calm, minute=510, day=1, now_h=8.5) == steps
    news = planner.decide("Tomas walks in", current=steps[0], now_h=8.75)
    assert news == Decision(True, "talk to Tomas about the party", 30)
    new = planner.replan(steps, news, minute=525, day=1, now_h=8.75)
    assert [s.clock() for s in new] == ["08:00-08:45 serve breakfast", "08:45-09:15 talk to Tomas about the party",
                                        "09:15-10:00 bake", "10:00-11:00 clean"]
    reaction = planner.stream.recent(1, kinds=["plan"])[0]
    assert reaction.metadata["reaction"] is True and "talk to Tomas" in reaction.text
    prompt = planner.generator.calls[1][0][0]["content"]
    assert "Tomas mentioned a party" in prompt  # the decision was conditioned on retrieved memories


# The step pattern as it was, as an oracle on short lines: quadratic only in long runs of spaces.
_OLD_LINE = re.compile(r"^\s*(?:[-*•]|\d+[.)])?\s*(\d{1,2}):(\d{2})\s*(?:-|–|to)\s*(\d{1,2}):(\d{2})"
                       r"\s*[:,-]?\s*(.+?)\s*$")
_PIECES = [" ", "  ", "\t", "-", "*", "1.", "2)", "09", ":", "00", "10", "–", "to", "x", "walk", ",", "\u00a0"]
_SPACE = st.sampled_from(["", " ", "  ", "\t", "\u00a0"])


@settings(max_examples=400, deadline=None)
@given(st.tuples(_SPACE, st.sampled_from(["", "-", "*", "1.", "2)", "x"]), _SPACE,
                 st.sampled_from(["09:00", "9:5", "x"]), _SPACE, st.sampled_from(["-", "–", "to", ","]), _SPACE,
                 st.sampled_from(["10:30", "08:00", ""]),
                 _SPACE, st.sampled_from(["", ":", ",", "-"]), _SPACE, st.lists(st.sampled_from(_PIECES), max_size=6)))
def test_step_lines_parse_as_the_old_pattern_parsed_them(parts):
    line = "".join(parts[:-1]) + "".join(parts[-1])
    old = _OLD_LINE.match(line)
    step = parse_step(line)
    if old is None:
        assert step is None
    else:
        h1, m1, h2, m2, text = old.groups()
        start, end = int(h1) * 60 + int(m1), int(h2) * 60 + int(m2)
        expected = (start, end, text.strip().rstrip(".")) if start < end and text.strip() else None
        assert (step and (step.start_min, step.end_min, step.text)) == expected


def test_a_step_line_with_a_long_run_of_spaces_parses_at_once():
    step = parse_step("09:00 - 10:00 walk" + " " * 100_000 + "home")
    assert (step.start_min, step.end_min, step.text) == (540, 600, "walk" + " " * 100_000 + "home")
    assert parse_step(" " * 100_000 + "x") is None
