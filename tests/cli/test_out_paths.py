"""Where a command writes its result is checked as its options are read: a benchmark that runs for minutes
must not find at the end that `--json` names a folder or sits under a file."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragsvc.cli.bench import app

runner = CliRunner()


def _flat(text: str) -> str:
    """Text without the error box's borders and line wraps."""
    return "".join(text.replace("│", "").split())


@pytest.mark.parametrize("command", [["load"], ["filter"], ["soak"], ["chat"], ["serving"], ["search"]])
def test_a_folder_or_a_path_under_a_file_is_refused_before_the_run(tmp_path: Path, command: list[str]) -> None:
    (tmp_path / "afile").write_text("x")
    for out, says in ((tmp_path, "is a folder; give the path of a file"),
                      (tmp_path / "afile" / "sub" / "r.json", "is a file, so")):
        result = runner.invoke(app, [*command, "--json", str(out)])
        assert result.exit_code == 2, result.output
        assert _flat(says) in _flat(result.output)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # nothing was made


def test_a_missing_town_fails_the_chat_benchmark_before_any_server_starts(tmp_path: Path) -> None:
    result = runner.invoke(app, ["chat", "--town", str(tmp_path / "nowhere"), "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 2 and "town.toml: cannot read it" in result.output


def test_the_interview_report_path_is_checked_before_the_model_loads(tmp_path: Path) -> None:
    from ragsvc.cli.agents import app as agents_app

    result = runner.invoke(agents_app, ["interview", str(tmp_path), "--report", str(tmp_path)])
    assert result.exit_code == 2 and _flat("is a folder") in _flat(result.output)
