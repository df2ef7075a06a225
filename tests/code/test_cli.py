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
    refused = runner.invoke(app, ["index", str(tmp_path), "--max-file-kb", "0", "--data-dir", str(tmp_path)])
    assert refused.exit_code == 2 and "--max-file-kb" in refused.output


@pytest.mark.slow
def test_index_then_map_and_search(polyglot: Path, tmp_path: Path) -> None:
    repo = Path(shutil.copytree(polyglot, tmp_path / "poly"))
    (repo / "blob.py").write_bytes(b"\x00\x01 not text")
    (repo / "big.py").write_text("x = 1\n" * 400)
    data = str(tmp_path / "data")
    result = runner.invoke(app, ["index", str(repo), "--data-dir", data, "--max-file-kb", "2"])
    assert result.exit_code == 0, result.output
    assert "repo-poly: 10 files (10 parsed, 0 unchanged, 0 removed)" in result.stdout
    assert "pkg/broken.py: syntax error" in result.stdout
    assert "not indexed: 1 x binary file, 1 x larger than 2048 bytes" in result.stdout
    again = runner.invoke(app, ["index", str(repo), "--data-dir", data, "--max-file-kb", "2"])
    assert "(0 parsed, 10 unchanged, 0 removed)" in again.stdout
    mapped = runner.invoke(app, ["map", str(repo), "--data-dir", data, "--tokens", "60", "-q", "HTTP client fetch"])
    assert mapped.exit_code == 0 and "web/api.ts:" in mapped.stdout
    found = runner.invoke(app, ["search", "join two path parts", "-c", "repo-poly", "-k", "3", "--data-dir", data])
    assert found.exit_code == 0 and "go/server.go:13-15  function Join" in found.stdout


def test_empty_map_and_bad_search_options_say_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "notes.md").write_text("# no code here\n")
    mapped = runner.invoke(app, ["map", str(tmp_path), "--data-dir", str(tmp_path / "data")])
    assert mapped.exit_code == 0
    assert mapped.stdout == "" and "no definitions found under" in mapped.stderr and "*.py" in mapped.stderr
    language = runner.invoke(app, ["search", "x", "-c", "repo-x", "--language", "cobol", "--data-dir", str(tmp_path)])
    assert language.exit_code == 2 and "use one of c, cpp, go" in language.output
    for option in (["-k", "0"], ["--tokens", "0"]):
        command = ["search", "x", "-c", "repo-x"] if option[0] == "-k" else ["map", str(tmp_path)]
        assert runner.invoke(app, [*command, *option]).exit_code == 2


def test_code_search_refuses_k_below_one() -> None:
    from ragsvc.code.search import code_search
    from ragsvc.errors import InvalidInput

    with pytest.raises(InvalidInput, match="k must be at least 1"):
        code_search(object(), "repo-x", "x", k=0)
