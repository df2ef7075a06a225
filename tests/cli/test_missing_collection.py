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
    assert "error: collection 'nope' does not exist; create it with `ragsvc collections create nope`" in result.output
    assert "POST /v1" not in result.output
