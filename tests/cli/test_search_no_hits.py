"""`ragsvc search` that finds nothing says so, with what can cause it for the mode and options it ran with
(it printed only the timing line), on a real store and MiniLM."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragsvc.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("nohits")
    docs = [{"id": "tides", "text": "Tides rise and fall twice a day.", "metadata": {"topic": "sea"}}]
    (root / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    result = runner.invoke(app, ["ingest", str(root / "docs.jsonl"), "-c", "earth", "--data-dir", str(root / "data")])
    assert result.exit_code == 0, result.output
    assert runner.invoke(app, ["collections", "create", "void", "--data-dir", str(root / "data")]).exit_code == 0
    return root / "data"


@pytest.mark.parametrize(("args", "said"), [
    (["the of and", "-c", "earth", "--mode", "lexical"], "no hits: no word of the query occurs in it"),
    (["tides", "-c", "earth", "--filter", '{"topic": "ice"}'], "no hits: no chunk matches the filter\n"),
    (["tides", "-c", "void"], "no hits: void holds no documents\n"),
])
def test_a_search_with_no_hits_says_what_can_cause_it(data_dir: Path, args: list[str], said: str) -> None:
    result = runner.invoke(app, ["search", *args, "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    assert said in result.output


def test_a_search_with_hits_says_nothing_of_the_kind(data_dir: Path) -> None:
    result = runner.invoke(app, ["search", "tides", "-c", "earth", "--data-dir", str(data_dir)])
    assert result.exit_code == 0 and " 1. " in result.output and "no hits" not in result.output
    # the time printed is the search's; the embedder's loading, when it took a while, is named apart
    timing = result.output.splitlines()[-1]
    assert re.fullmatch(r"\(hnsw.*; [\d.]+ ms(, after [\d.]+ s loading the embedder)?\)", timing)
