"""The interview report as Markdown: how it was run, accuracy per category x condition with 95% intervals,
each ablation against full on the same questions, the verdict on the categories that depend on what an
ablation removes, and a sample of answers so a reader can judge the checks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ragsvc.agents.interview_score import verdicts

METHOD = (
    "Each resident is asked questions in the five categories of Park et al. 2023 (self-knowledge, memory, plans, "
    "reactions, reflections), generated from the town's files, the run's memories and its transcript "
    "(ragsvc/agents/interview_questions.py); each has an automatic check: expected keywords (any one, matched up "
    "to the word's ending), a yes/no polarity, or both. Conditions restrict what the agent may use when it "
    "answers, over the same memory stream: full (persona + retrieved memories), no-reflection (reflection "
    "memories removed from what retrieval returns), no-planning (plan memories removed), no-retrieval (persona "
    "summary only). Answers are greedy. Intervals: percentile bootstrap over questions (1000 resamples); "
    "full - ablation: paired over the same questions, with a paired permutation test.")


def _cell(cell: Mapping[str, Any] | None) -> str:
    if not cell:
        return "-"
    return f"{cell['mean']:.2f} [{cell['ci95'][0]:.2f}, {cell['ci95'][1]:.2f}] (n={cell['n']})"


def render_markdown(summary: Mapping[str, Any], meta: Mapping[str, Any], records: Sequence[Mapping[str, Any]],
                    *, samples_per_category: int = 2) -> str:
    conditions = summary["conditions"]
    lines = [f"# Agent interviews: {meta.get('model', '?')}", ""]
    for key in ("command", "run", "town", "now_h", "model", "cpu", "git_sha", "questions", "seconds", "note"):
        if meta.get(key) is not None:
            lines.append(f"- {key}: `{meta[key]}`" if key == "command" else f"- {key}: {meta[key]}")
    lines += ["", "## How", "", METHOD]
    lines += ["", "## Accuracy (share of answers passing their check; 95% bootstrap CI over questions)", "",
              "| category | " + " | ".join(conditions) + " |", "|---|" + "---|" * len(conditions)]
    for category in summary["categories"]:
        row = summary["accuracy"].get(category, {})
        lines.append(f"| {category} | " + " | ".join(_cell(row.get(c)) for c in conditions) + " |")
    if summary["vs_full"]:
        lines += ["", "## Full minus each ablation (paired over the same questions)", "",
                  "| ablation | category | full - ablation | 95% CI | p (permutation) | n | depends on removed part |",
                  "|---|---|---|---|---|---|---|"]
        for ablation, by_category in summary["vs_full"].items():
            for category, d in by_category.items():
                lines.append(f"| {ablation} | {category} | {d['diff']:+.3f} | [{d['ci95'][0]:+.3f}, "
                             f"{d['ci95'][1]:+.3f}] | {d['p']} | {d['n']} | {'yes' if d['depends'] else ''} |")
        lines += ["", "## Target: full beats each ablation where the removed part matters", ""]
        lines += [f"- {v}" for v in verdicts(summary)] or ["- (no ablation run beside full)"]
    lines += stored_reflection_lines(records, conditions)
    lines += ["", "## Sample answers", "", "| condition | question | expected | answer | ok |", "|---|---|---|---|---|"]
    for category in summary["categories"]:
        ids = list(dict.fromkeys(r["id"] for r in records if r["category"] == category))[:samples_per_category]
        shown = sorted((r for r in records if r["id"] in ids),
                       key=lambda r: (ids.index(r["id"]), conditions.index(r["condition"])))
        for r in shown:  # each sampled question under every condition, side by side
            answer = " ".join(str(r["answer"]).split()).replace("|", "/")[:160]
            lines.append(f"| {r['condition']} | {r['agent']}: {r['question']} | {r['expected']} | {answer} | "
                         f"{'yes' if r['correct'] else 'no'} |")
    return "\n".join(lines) + "\n"


def stored_reflection_lines(records: Sequence[Mapping[str, Any]], conditions: Sequence[str]) -> list[str]:
    """The reflection questions drawn from stored reflections, per condition: the only questions whose prompt
    the no-reflection ablation can change (the others in the category ask whom the agent knows, which every
    condition's memories can answer); an agent with no reflection gets none of them."""
    mine = [r for r in records if str(r.get("source", "")).startswith("reflection memory")]
    if not mine:
        return ["", "No reflection question came from a stored reflection: the run's agents stored none that "
                "the persona does not already say, so full and no-reflection ask the same prompts."]
    agents = sorted({str(r["agent"]) for r in mine})
    cells = []
    for condition in conditions:
        values = [1.0 if r["correct"] else 0.0 for r in mine if r["condition"] == condition]
        cells.append(f"{sum(values) / len(values):.2f} (n={len(values)})" if values else "-")
    return ["", f"## Reflection questions drawn from stored reflections ({len(agents)} agent(s): "
            f"{', '.join(agents)})", "", "| " + " | ".join(conditions) + " |", "|" + "---|" * len(conditions),
            "| " + " | ".join(cells) + " |"]
