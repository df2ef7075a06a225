"""The `ragsvc` command in-process (typer's runner) on real files, the real store and MiniLM."""

import json

import pytest
from typer.testing import CliRunner

from ragsvc.cli import app

runner = CliRunner()


@pytest.fixture()
def corpus(tmp_path):
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "paged.md").write_text("# Paged attention\n\nKV cache blocks and block tables.\n")
    (folder / "sub" / "graphs.txt").write_text("HNSW graphs answer nearest neighbour queries.\n")
    (folder / "rows.jsonl").write_text(
        json.dumps({"id": "r1", "text": "DuckDB keeps tables in a single file.", "metadata": {"kind": "db"}}) + "\n"
        + json.dumps({"text": "Tree-sitter parses code."}) + "\n")
    (folder / "ignored.bin").write_bytes(b"\x00\x01")
    return folder


@pytest.mark.slow
def test_ingest_then_search_json(tmp_path, corpus):
    data = str(tmp_path / "data")
    result = runner.invoke(app, ["ingest", str(corpus), "--collection", "docs", "--data-dir", data])
    assert result.exit_code == 0, result.output
    assert "4 documents" in result.output
    result = runner.invoke(app, ["search", "single file database", "-c", "docs", "-k", "2", "--json",
                                 "--data-dir", data])
    assert result.exit_code == 0, result.output
    body = json.loads(result.output[result.output.index("{"):])
    assert body["hits"][0]["document_id"] == "r1"
    assert body["hits"][0]["metadata"]["kind"] == "db"
    listed = runner.invoke(app, ["collections", "list", "--data-dir", data])
    assert "docs: 4 docs" in listed.output


def test_bad_inputs_exit_2_with_a_reason_and_write_nothing(tmp_path, corpus):
    data = tmp_path / "data"
    (corpus / "broken.jsonl").write_text('{"text": "ok"}\n{"text": \n')
    result = runner.invoke(app, ["ingest", str(corpus), "--collection", "docs", "--data-dir", str(data)])
    assert result.exit_code == 2
    assert "broken.jsonl:2" in result.output and "invalid JSON" in result.output
    assert not (data / "catalog.duckdb").exists()
    result = runner.invoke(app, ["ingest", str(tmp_path / "missing"), "--collection", "docs", "--data-dir", str(data)])
    assert result.exit_code == 2 and "no such file" in result.output


def test_help_lists_the_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("serve", "quickstart", "ingest", "search", "collections"):
        assert command in result.output
