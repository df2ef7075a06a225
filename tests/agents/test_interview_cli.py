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
