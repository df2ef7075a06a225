"""`ragsvc ask --reasoning` end to end: a real store, hybrid retrieval, and the real SmolLM2 engine in process.

The 135M model's reasoning is not judged here, only the contract of the style: the answer is reasoning that
ends with "(So) the answer is X" (the answerer writes the label when the model stops before it), and X is
`final` in the JSON record."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragsvc.cli import app

runner = CliRunner()
MODEL_CACHE = Path(tempfile.gettempdir()) / "ragsvc-test-models"  # shared with tests/llm: converted once
QUESTION = "Which body pulls the tides?"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ask")
    docs = [{"id": "tides", "text": "Tides rise and fall twice a day because of the moon's gravity.",
             "metadata": {"topic": "sea"}},
            {"id": "glacier", "text": "Glaciers carve U-shaped valleys as they slowly move downhill.",
             "metadata": {"topic": "ice"}}]
    (root / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    result = runner.invoke(app, ["ingest", str(root / "docs.jsonl"), "-c", "earth", "--data-dir", str(root / "data")])
    assert result.exit_code == 0, result.output
    return root / "data"


def test_reasoning_answer_ends_with_its_final_answer(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGSVC_MODEL__CACHE_DIR", str(MODEL_CACHE))
    monkeypatch.setenv("RAGSVC_MODEL__DTYPE", "float32")
    result = runner.invoke(app, ["ask", QUESTION, "-c", "earth", "--data-dir", str(data_dir), "--reasoning",
                                 "--model", "smollm2", "--max-tokens", "48", "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output[result.output.index("{"):])
    closing = re.search(r"answer is:?\s*(.+?)\W*$", record["answer"], re.IGNORECASE)  # "So the answer is X."
    assert closing is not None, record["answer"]
    assert record["final"] and record["final"] == closing.group(1).strip()
    assert [p["document_id"] for p in record["passages"]][:1] == ["tides"]  # hybrid search found it first
    assert record["generations"][0]["kind"] == "answer" and len(record["retrievals"]) == 1


def test_reasoning_and_short_together_are_refused_before_any_model_loads(data_dir: Path) -> None:
    result = runner.invoke(app, ["ask", QUESTION, "-c", "earth", "--data-dir", str(data_dir), "--reasoning",
                                 "--short"])
    assert result.exit_code == 2 and "--short or --reasoning, not both" in result.output


def test_asking_an_empty_collection_is_refused_before_any_model_loads(data_dir: Path) -> None:
    assert runner.invoke(app, ["collections", "create", "void", "--data-dir", str(data_dir)]).exit_code == 0
    result = runner.invoke(app, ["ask", QUESTION, "-c", "void", "--data-dir", str(data_dir)])
    assert result.exit_code == 2 and "holds no documents" in result.output, result.output


def test_a_filter_limits_the_passages_an_answer_reads(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGSVC_MODEL__CACHE_DIR", str(MODEL_CACHE))
    monkeypatch.setenv("RAGSVC_MODEL__DTYPE", "float32")
    result = runner.invoke(app, ["ask", QUESTION, "-c", "earth", "--data-dir", str(data_dir), "--filter",
                                 '{"topic": "ice"}', "--model", "smollm2", "--max-tokens", "8", "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output[result.output.index("{"):])
    assert [p["document_id"] for p in record["passages"]] == ["glacier"]  # the tides passage ranks first unfiltered


def test_a_filter_no_passage_matches_is_said_and_nothing_is_made_up(data_dir: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGSVC_MODEL__CACHE_DIR", str(MODEL_CACHE))
    monkeypatch.setenv("RAGSVC_MODEL__DTYPE", "float32")
    args = ["ask", QUESTION, "-c", "earth", "--data-dir", str(data_dir), "--filter", '{"topic": "space"}',
            "--model", "smollm2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "no passage of earth matched the question and the filter, so there is nothing to answer from" in \
        " ".join(result.output.split())
    assert "sources:" not in result.output  # no empty answer and sources list printed after it


def test_theta_without_flare_is_refused_not_ignored(tmp_path: Path) -> None:
    result = runner.invoke(app, ["ask", "why?", "--theta", "0.9", "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 2 and "add --flare" in " ".join(result.output.replace("│", "").split())
    assert not (tmp_path / "data").exists()


def test_stream_and_json_together_are_refused(tmp_path: Path) -> None:
    result = runner.invoke(app, ["ask", "why?", "--stream", "--json", "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 2 and "--stream or --json, not both" in result.output
