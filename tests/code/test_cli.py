"""`ragsvc repo index|map|search` through typer's runner (the real store and model for index)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragsvc.cli.repo import app

runner = CliRunner()


def test_map_of_an_unindexed_repo_needs_no_store(polyglot: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["map", str(polyglot), "--tokens", "30", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("pkg/core.py:\n    6│ def normalize(text):")


def test_bad_paths_fail_with_a_clear_message(tmp_path: Path) -> None:
    for command in (["index", str(tmp_path / "nope")], ["map", str(tmp_path / "nope")]):
        result = runner.invoke(app, [*command, "--data-dir", str(tmp_path)])
        assert result.exit_code == 2
        assert "does not exist; pass an existing folder" in result.output


@pytest.mark.slow
def test_index_then_map_and_search(polyglot: Path, tmp_path: Path) -> None:
    repo = Path(shutil.copytree(polyglot, tmp_path / "poly"))
    data = str(tmp_path / "data")
    result = runner.invoke(app, ["index", str(repo), "--data-dir", data])
    assert result.exit_code == 0, result.output
    assert "repo-poly: 10 files (10 parsed, 0 unchanged, 0 removed)" in result.stdout
    assert "pkg/broken.py: syntax error" in result.stdout
    again = runner.invoke(app, ["index", str(repo), "--data-dir", data])
    assert "(0 parsed, 10 unchanged, 0 removed)" in again.stdout
    mapped = runner.invoke(app, ["map", str(repo), "--data-dir", data, "--tokens", "60", "-q", "HTTP client fetch"])
    assert mapped.exit_code == 0 and "web/api.ts:" in mapped.stdout
    found = runner.invoke(app, ["search", "join two path parts", "-c", "repo-poly", "-k", "3", "--data-dir", data])
    assert found.exit_code == 0 and "go/server.go:13-15  function Join" in found.stdout
