"""`ragsvc agents interview RUN_DIR`: interview a simulation's residents, under the full architecture and its
ablations, and report accuracy per category x condition with 95% bootstrap intervals.

The questions and their checks come from the run's town, memories and transcript (ragsvc/agents/
interview_questions.py); the conditions restrict what each answer may use (ragsvc/agents/interview.py).
Interviews never write to the run. With `--json OUT`, answers already in OUT for the same run, model and
questions are kept (and checked again with the current checks) and only the missing (question, condition)
pairs are asked: a long evaluation can be split into several runs (one condition each, say), and the report
covers everything answered so far. When nothing is missing no model is loaded.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from ragsvc.cli.common import checked_out, fail, settings
from ragsvc.cli.progress import TqdmProgress
from ragsvc.errors import RagsvcError

MAX_MEMORIES = 100_000
"""Memories read per agent to derive the checks (a 72-hour run of five agents stays far below)."""


def register(app: typer.Typer) -> None:
    app.command("interview")(interview)


def interview(
    run_dir: Annotated[Path, typer.Argument(help="a simulation folder (the --out of `ragsvc agents run`)")],
    model: Annotated[str | None, typer.Option(help="local model: packaged alias, HF folder or .gguf \\[default: "
                                                   "RAGSVC_MODEL__MODEL or smollm2]")] = None,
    conditions: Annotated[str, typer.Option(help="comma-separated: full, no-reflection, no-planning, "
                                                 "no-retrieval")] = "full,no-reflection,no-planning,no-retrieval",
    max_per_category: Annotated[int | None, typer.Option(help="questions per agent and category at most")] = None,
    categories: Annotated[str | None, typer.Option(help="comma-separated categories to ask \\[default: all five]")
                          ] = None,
    max_tokens: Annotated[int, typer.Option(help="answer tokens at most")] = 48,
    k: Annotated[int, typer.Option("-k", help="memories retrieved per question")] = 8,
    batch_size: Annotated[int, typer.Option(help="questions sent to the model together")] = 8,
    json_out: Annotated[Path | None, typer.Option(
        "--json", callback=checked_out, help="answers + summary as JSON (resumed if it exists)")] = None,
    report: Annotated[Path | None, typer.Option(
        "--report", callback=checked_out, help="write the Markdown report here")] = None,
    note: Annotated[str | None, typer.Option(help="a line for the report (how the run was made, say)")] = None,
) -> None:
    """Interview RUN_DIR's agents in five categories and score the answers per condition."""
    from ragsvc.agents.interview import InterviewOptions, parse_conditions, run_interview
    from ragsvc.agents.interview_questions import generate_questions, parse_categories
    from ragsvc.agents.interview_score import answer_record
    from ragsvc.agents.simulation import CATALOG_FILE, open_run
    from ragsvc.embed.embedder import embedder_from_settings

    try:
        names = parse_conditions(conditions)
        asked = parse_categories(categories)
        options = InterviewOptions(k=k, max_tokens=max_tokens, batch_size=batch_size, pool=max(40, k))
        if max_per_category is not None and not 1 <= max_per_category <= 100:
            raise ValueError(f"--max-per-category must be in [1, 100], got {max_per_category}")
        if not (run_dir / CATALOG_FILE).is_file():  # before loading the embedder: a typo fails at once
            raise ValueError(f"{run_dir} holds no simulation; pass the --out folder of `ragsvc agents run`")
        town, streams, transcript = open_run(run_dir, embedder=embedder_from_settings(settings().embed))
    except (RagsvcError, ValueError) as exc:
        raise fail(exc) from exc
    config = settings()
    model_name = model or config.model.model
    try:
        memories = {name: s.recent(MAX_MEMORIES) for name, s in streams.items()}
        now_h = _now_h(memories, transcript)
        questions = [q for q in generate_questions(town, memories, now_h=now_h, transcript=transcript,
                                                   max_per_category=max_per_category) if q.category in asked]
        meta = {"run": _label(run_dir), "town": town.name, "now_h": round(now_h, 3),
                "model": _label(Path(model_name)) if Path(model_name).suffix else model_name,
                "questions": len(questions), "command": _command(), "note": note}
        records, seconds_before = _previous(json_out, meta, questions)
        done = {(r["id"], r["condition"]) for r in records}
        answered = {(r["agent"], r["question"], tuple(r["memory_ids"])): r["answer"] for r in records}
        started = time.perf_counter()
        missing = [c for c in names if any((q.id, c) not in done for q in questions)]
        if not missing:  # everything answered: re-scored with the current checks, no model needed
            _write(records, meta, seconds_before, json_out, report, echo=True)
        engine: Any = _generator(config, model) if missing else contextlib.nullcontext()
        with engine as generator:
            for condition in missing:  # one condition at a time, saved after each: a killed run keeps them
                with TqdmProgress(f"interview {condition}", unit="prompt") as bar:
                    answers = run_interview(questions, personas={p.name: p for p in town.residents},
                                            streams=streams, generator=generator, conditions=[condition],
                                            now_h=now_h, options=options, skip=lambda q, c: (q.id, c) in done,
                                            answered=answered, progress=bar)
                records += [answer_record(a) for a in answers]
                seconds = round(seconds_before + time.perf_counter() - started, 1)
                _write(records, meta, seconds, json_out, report, echo=condition == missing[-1])
    except RagsvcError as exc:
        raise fail(exc) from exc
    finally:
        streams.close()


def _now_h(memories: dict[str, Any], transcript: list[dict[str, Any]]) -> float:
    """The run's clock at its end: the latest memory or transcript time."""
    times = [m.created_h for ms in memories.values() for m in ms]
    times += [float(r["time_h"]) for r in transcript if "time_h" in r]
    return max(times, default=0.0)


def _label(path: Path) -> str:
    """A path as recorded in a report: as given when relative, else its name (no machine paths)."""
    return str(path) if not path.is_absolute() else path.name


def _command() -> str:
    args = [a if not Path(a).is_absolute() else Path(a).name for a in sys.argv[1:]]
    return "ragsvc " + shlex.join(args)


def _generator(config: Any, model: str | None) -> Any:
    from ragsvc.llm.in_process import InProcessGenerator
    from ragsvc.serving.config import EngineConfig

    return InProcessGenerator.from_config(EngineConfig.from_settings(config, model=model))


def _previous(path: Path | None, meta: dict[str, Any], questions: list[Any]) -> tuple[list[dict[str, Any]], float]:
    """(answer records, seconds spent) of earlier calls into `path` for the same run, model and questions,
    each checked again with the question's current check."""
    if path is None or not path.is_file():
        return [], 0.0
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise fail(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}); remove it or pass another --json") from exc
    same = {k: data.get("meta", {}).get(k) for k in ("run", "model", "now_h")} == {
        k: meta[k] for k in ("run", "model", "now_h")}
    current = {q.id: q for q in questions}
    if not same:
        typer.secho(f"{path} holds another run or model's answers; starting afresh", fg=typer.colors.YELLOW, err=True)
        return [], 0.0
    kept = []
    for r in data.get("answers", []):
        q = current.get(r["id"])
        if q is not None and q.text == r["question"]:  # the same prompt: its answer stands; the check may be new
            kept.append({**r, "expected": q.check.describe(), "source": q.source,
                         "correct": q.check.passes(r["answer"])})
    return kept, float(data["meta"].get("seconds", 0.0)) if kept else 0.0


def _write(records: list[dict[str, Any]], meta: dict[str, Any], seconds: float, json_out: Path | None,
           report: Path | None, *, echo: bool) -> None:
    from ragsvc.agents.interview_report import render_markdown
    from ragsvc.agents.interview_score import summarize, verdicts
    from ragsvc.bench.flare import cpu_model
    from ragsvc.evals.results import git_sha, write_atomic, write_json_atomic
    from ragsvc.evals.stats import bootstrap_ci, paired_difference_ci, paired_permutation_test

    summary = summarize(records, interval=bootstrap_ci, paired_interval=paired_difference_ci,
                        paired_test=paired_permutation_test)
    meta = {**meta, "cpu": cpu_model(), "git_sha": git_sha(Path.cwd()), "seconds": seconds}
    if json_out is not None:
        write_json_atomic(json_out, {"meta": meta, "summary": summary, "answers": records})
    if report is not None:
        write_atomic(report, render_markdown(summary, meta, records).encode("utf-8"))
    if not echo:
        return
    for category, by_condition in summary["accuracy"].items():
        cells = "  ".join(f"{c}={v['mean']:.2f} [{v['ci95'][0]:.2f},{v['ci95'][1]:.2f}]"
                          for c, v in by_condition.items())
        typer.echo(f"{category:15s} {cells}")
    for line in verdicts(summary):
        typer.echo(line)
