"""A command that names a collection that does not exist says how to create it as a command
(`ragsvc collections create NAME`), not as the HTTP request the API's message names (its wording stays in HTTP
responses: tests/api/test_collections_api.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragsvc.cli import app

runner = CliRunner()


@pytest.mark.parametrize("command", [["search", "tides"], ["ask", "why tides?"], ["collections", "delete"]])
def test_a_missing_collection_is_created_with_the_cli_command(tmp_path: Path, command: list[str]) -> None:
    data = str(tmp_path / "data")
    listed = runner.invoke(app, ["collections", "list", "--data-dir", data])
    assert listed.exit_code == 0 and listed.output.startswith("no collections in ")
    assert "create one with `ragsvc ingest FILES -c NAME`" in listed.output
    args = [*command, "nope"] if command[0] == "collections" else [*command, "--collection", "nope"]
    result = runner.invoke(app, [*args, "--data-dir", data])
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert "error: collection 'nope' does not exist (this data folder holds no collection yet); " in said
    if command[0] == "collections":
        assert said.endswith("; nothing was deleted")
    else:
        assert "fill it with `ragsvc ingest FILES -c nope`, or create it empty with `ragsvc collections create nope`" \
            in said
    assert "POST /v1" not in result.output


def test_a_missing_collection_names_those_the_folder_holds_and_the_sample_says_how_to_load_it(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    for name in ("notes", "papers"):
        assert runner.invoke(app, ["collections", "create", name, "--data-dir", data]).exit_code == 0
    typo = runner.invoke(app, ["search", "tides", "-c", "paper", "--data-dir", data])
    assert "collection 'paper' does not exist (this data folder holds notes, papers)" in typo.output
    sample = " ".join(runner.invoke(app, ["ask", "why tides?", "--data-dir", data]).output.split())
    assert "collection 'sample' does not exist" in sample
    assert sample.endswith("`ragsvc quickstart` or `ragsvc serve --sample` loads the bundled sample into it")
