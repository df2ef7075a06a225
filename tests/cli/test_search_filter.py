"""`ragsvc search --filter` and `ragsvc ask --filter` with a filter that is not JSON, or JSON that is not an object,
fails with a message naming the option and the shape it takes; nothing is opened or written."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragsvc.cli import app

runner = CliRunner()


@pytest.mark.parametrize(("given", "said"), [
    ("{bad", "--filter is not JSON (Expecting property name enclosed in double quotes at character 2)"),
    ("[1]", 'filter must be a JSON object such as {"lang": "python"}, got list'),
    ('"md"', 'filter must be a JSON object such as {"lang": "python"}, got str'),
])
@pytest.mark.parametrize("command", ["search", "ask"])
def test_a_filter_that_is_not_a_json_object_is_refused_by_name(tmp_path: Path, command: str, given: str,
                                                                said: str) -> None:
    data = tmp_path / "data"
    result = runner.invoke(app, [command, "tides?", "-c", "t", "--filter", given, "--data-dir", str(data)])
    assert result.exit_code == 2, result.output
    assert f"error: {said}" in " ".join(result.output.split())
    assert not data.exists()
