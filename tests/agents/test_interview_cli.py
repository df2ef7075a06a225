"""`ragsvc agents interview`: bad input is refused with a clear message before any model loads."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from ragsvc.cli.agents_interview import register


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)  # two commands, so typer keeps the command name in the usage
    return app


def test_unknown_condition_is_refused_with_the_known_ones(tmp_path):
    result = CliRunner().invoke(_app(), ["interview", str(tmp_path), "--conditions", "full,no-memory"])
    assert result.exit_code == 2
    assert "no-memory" in result.output and "no-retrieval" in result.output


def test_a_folder_without_a_run_is_refused(tmp_path):
    result = CliRunner().invoke(_app(), ["interview", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "--out folder" in result.output
    result = CliRunner().invoke(_app(), ["interview", str(tmp_path)])
    assert result.exit_code == 2 and "no simulation" in result.output and "--out folder" in result.output
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_out_of_range_options_are_refused(tmp_path):
    for args in (["--max-per-category", "0"], ["--max-tokens", "4"], ["-k", "0"]):
        result = CliRunner().invoke(_app(), ["interview", str(tmp_path), *args])
        assert result.exit_code == 2, args


def test_earlier_answers_are_kept_only_for_the_same_run_and_checked_again(tmp_path):
    import json

    from ragsvc.agents.interview_check import Check
    from ragsvc.agents.interview_questions import Question
    from ragsvc.cli.agents_interview import _previous

    meta = {"run": "r", "model": "m", "now_h": 9.0}
    question = Question(id="a/plans/0", agent="A", category="plans", text="What at 10:00?",
                        check=Check(keywords=("pier",)), source="routine")
    rows = [{"id": "a/plans/0", "agent": "A", "question": "What at 10:00?", "condition": "full", "answer": "Fishing.",
             "expected": "any of fish", "correct": True, "memory_ids": [1]},
            {"id": "a/plans/1", "agent": "A", "question": "Gone?", "condition": "full", "answer": "Yes.",
             "expected": "yes", "correct": True, "memory_ids": []}]
    path = tmp_path / "answers.json"
    path.write_text(json.dumps({"meta": {**meta, "seconds": 12.5}, "answers": rows}))
    kept, seconds = _previous(path, meta, [question])
    assert seconds == 12.5 and len(kept) == 1  # the question no longer asked is dropped
    assert kept[0]["correct"] is False and kept[0]["expected"] == "any of pier"  # today's check, same answer
    assert _previous(path, {**meta, "model": "other"}, [question]) == ([], 0.0)
