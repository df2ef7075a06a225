"""`ragsvc serve` refuses a data folder it cannot use with one line and exit status 2, before uvicorn starts
(a failure inside the app's startup would print a traceback instead)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from ragsvc.cli import app

runner = CliRunner()
HOLD = "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('held', flush=True); sys.stdin.read()"


def test_a_catalog_another_process_holds_is_refused_in_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(data / "catalog.duckdb")], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        result = runner.invoke(app, ["serve", "--data-dir", str(data), "--port", "1"])
    finally:
        holder.communicate("")  # closing its stdin lets it exit
    assert result.exit_code == 2, result.output
    assert "Another ragsvc process" in result.output and "Traceback" not in result.output


def test_a_data_dir_that_is_a_file_is_refused_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("not a folder")
    for command in (["serve", "--port", "1"], ["collections", "list"]):
        result = runner.invoke(app, [*command, "--data-dir", str(tmp_path / "data")])
        assert result.exit_code == 2 and "--data-dir" in result.output, (command, result.output)
