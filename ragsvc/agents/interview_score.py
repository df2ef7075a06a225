"""Interview accuracy per category x condition, with confidence intervals, and each ablation against full.

Questions are the unit of resampling: an interval is a bootstrap over the questions of one cell, and an
ablation is compared with the full architecture on the same questions (a paired interval of the difference
and a paired permutation test). The interval and test functions are passed in (the CLI hands over
`ragsvc.evals.stats`), so this module stays a pure aggregation over answer records.

Records are plain dicts, the shape the interview JSON stores (`answer_record`), so a report can be rebuilt
from a JSON file written by an earlier run, or by two runs that each answered some of the conditions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ragsvc.agents.interview import CONDITIONS, Answer
from ragsvc.agents.interview_questions import CATEGORIES

Interval = Callable[[Sequence[float]], tuple[float, float]]
PairedInterval = Callable[[Sequence[float], Sequence[float]], tuple[float, float]]
PairedTest = Callable[[Sequence[float], Sequence[float]], float]
ALL = "all"

DEPENDS_ON = {
    "no-reflection": ("reflections",),
    "no-planning": ("plans",),
    "no-retrieval": ("memory", "plans", "reactions", "reflections"),
}
"""The categories whose answers rest on what each ablation removes (the target: full beats the ablation there)."""


def answer_record(answer: Answer) -> dict[str, Any]:
    q = answer.question
    return {"id": q.id, "agent": q.agent, "category": q.category, "condition": answer.condition,
            "question": q.text, "expected": q.check.describe(), "source": q.source, "answer": answer.text,
            "correct": answer.correct, "memory_ids": list(answer.memory_ids)}


def _cells(records: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], dict[str, float]]:
    """(category, condition) -> {question id: 1.0 or 0.0}; category ALL pools every question."""
    cells: dict[tuple[str, str], dict[str, float]] = {}
    for r in records:
        value = 1.0 if r["correct"] else 0.0
        for category in (r["category"], ALL):
            cells.setdefault((category, r["condition"]), {})[r["id"]] = value
    return cells


def summarize(records: Sequence[Mapping[str, Any]], *, interval: Interval, paired_interval: PairedInterval,
              paired_test: PairedTest) -> dict[str, Any]:
    """{"accuracy": {category: {condition: {mean, ci95, n}}}, "vs_full": {ablation: {category: {diff, ci95,
    p, n, depends}}}} over the conditions and categories present in `records`, in their canonical order."""
    cells = _cells(records)
    conditions = [c for c in CONDITIONS if any(r["condition"] == c for r in records)]
    categories = [c for c in (*CATEGORIES, ALL) if any(k[0] == c for k in cells)]
    accuracy: dict[str, dict[str, Any]] = {}
    for category in categories:
        accuracy[category] = {}
        for condition in conditions:
            values = list(cells.get((category, condition), {}).values())
            if values:
                low, high = interval(values)
                accuracy[category][condition] = {"mean": round(sum(values) / len(values), 3),
                                                 "ci95": [round(low, 3), round(high, 3)], "n": len(values)}
    vs_full: dict[str, dict[str, Any]] = {}
    for ablation in (c for c in conditions if c != "full" and "full" in conditions):
        vs_full[ablation] = {}
        for category in categories:
            full, other = cells.get((category, "full"), {}), cells.get((category, ablation), {})
            shared = sorted(set(full) & set(other))
            if not shared:
                continue
            a, b = [full[i] for i in shared], [other[i] for i in shared]
            low, high = paired_interval(b, a)
            vs_full[ablation][category] = {
                "diff": round((sum(a) - sum(b)) / len(shared), 3), "ci95": [round(low, 3), round(high, 3)],
                "p": round(paired_test(b, a), 4), "n": len(shared),
                "depends": category in DEPENDS_ON.get(ablation, ())}
    return {"conditions": conditions, "categories": categories, "accuracy": accuracy, "vs_full": vs_full}


def verdicts(summary: Mapping[str, Any]) -> list[str]:
    """One line per (ablation, dependent category): does full beat it clearly (the paired interval above 0 and
    the permutation test below 0.05: with a few dozen right/wrong answers the percentile interval alone is
    too narrow), or not?"""
    lines = []
    for ablation, by_category in summary["vs_full"].items():
        for category, d in by_category.items():
            if not d["depends"]:
                continue
            if d["diff"] > 0 and d["ci95"][0] > 0 and d["p"] < 0.05:
                verdict = "full beats it (CI above 0, p < 0.05)"
            elif d["diff"] > 0:
                verdict = "full ahead, not clear of noise (CI reaches 0 or p >= 0.05)"
            elif d["diff"] == 0:
                verdict = "no difference"
            else:
                verdict = "the ablation scores higher"
            lines.append(f"{category} vs {ablation}: {d['diff']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}], "
                         f"p={d['p']}, n={d['n']}: {verdict}")
    return lines
