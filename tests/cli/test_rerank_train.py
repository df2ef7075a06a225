"""`ragsvc rerank train` on a tiny judged corpus: the real store, hybrid search for the hard negatives, MiniLM's
weights as the start, and the saved folder loaded by the cross-encoder reranker."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragsvc.cli import app
from ragsvc.errors import InvalidInput
from ragsvc.retrieval.rerank_train import TrainOptions, mine_pairs

runner = CliRunner()

DOCS = {
    "tides": "Tides rise and fall twice a day because of the moon's gravity.",
    "moon": "The moon orbits the earth every 27 days.",
    "glacier": "Glaciers carve U-shaped valleys as they slowly move downhill.",
    "ice": "Ice ages covered much of the northern hemisphere in ice sheets.",
    "volcano": "Volcanoes erupt lava and ash when magma reaches the surface.",
    "magma": "Magma is molten rock stored in chambers beneath volcanoes.",
}
QUERIES = {"q1": "what causes the tides", "q2": "how do glaciers shape valleys", "q3": "what comes out of a volcano"}
QRELS = [("q1", "tides"), ("q2", "glacier"), ("q3", "volcano")]


def test_mine_pairs_takes_judged_positives_and_unjudged_shortlist_negatives():
    ranked = {"a query": ["p", "n1", "n2", "n3", "n4"]}
    texts = {"p": "P", "n1": "N1", "n2": "N2", "n3": "N3", "n4": None}
    pairs = mine_pairs({"q": "a query", "lost": "no judged text"}, {"q": {"p": 1, "n3": 0}, "lost": {"gone": 1}},
                       lambda query: ranked.get(query, []), texts.get, negatives=2, candidates=3)
    assert [(p.passage, p.label) for p in pairs if p.label] == [("P", 1.0)]
    negatives = {p.passage for p in pairs if not p.label}
    assert len(negatives) == 2 and negatives <= {"N1", "N2", "N3"}  # the top 3 not judged relevant ("p" is)
    again = mine_pairs({"q": "a query"}, {"q": {"p": 1}}, lambda query: ranked[query], texts.get, negatives=2,
                       candidates=3)
    assert again == mine_pairs({"q": "a query"}, {"q": {"p": 1}}, lambda query: ranked[query], texts.get,
                               negatives=2, candidates=3)  # seeded
    with pytest.raises(InvalidInput, match="epochs=0 is out of range"):
        TrainOptions(epochs=0)


@pytest.fixture(scope="module")
def judged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("judged")
    (root / "docs.jsonl").write_text("".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in DOCS.items()))
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in QUERIES.items()))
    (root / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, d in QRELS))
    result = runner.invoke(app, ["ingest", str(root / "docs.jsonl"), "-c", "earth", "--data-dir", str(root / "data")])
    assert result.exit_code == 0, result.output
    return root


def _train(root: Path, out: Path, *extra: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, ["rerank", "train", "-c", "earth", "--data-dir", str(root / "data"),
                               "--queries", str(root / "queries.jsonl"), "--qrels", str(root / "train.tsv"),
                               "--out", str(out), "--negatives", "2", "--batch-size", "4", "--max-length", "48",
                               *extra])


def test_trains_a_cross_encoder_the_reranker_loads(judged: Path, tmp_path: Path):
    from ragsvc.retrieval.rerank import CrossEncoderReranker
    from ragsvc.types import ChunkId, DocumentId, Hit

    out = tmp_path / "ce"
    result = _train(judged, out, "--epochs", "2")
    assert result.exit_code == 0, result.output
    found = re.search(r'\{"out".*\}', result.output)  # the summary line (progress bars share the output)
    assert found is not None, result.output
    summary = json.loads(found.group())
    assert summary["queries"] == 3 and summary["positives"] == 3 and summary["pairs"] == 9
    assert summary["steps"] == 6  # 9 pairs in batches of 4, twice
    reranker = CrossEncoderReranker(out)
    hits = [Hit(ChunkId(i), DocumentId(k), v, 0.0) for i, (k, v) in enumerate(DOCS.items())]
    ranked = reranker.rerank(QUERIES["q1"], hits)
    assert sorted(str(h.document_id) for h in ranked.hits) == sorted(DOCS)


def test_refuses_an_existing_folder_missing_judgements_and_an_unknown_collection(judged: Path, tmp_path: Path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "model.safetensors").write_text("x")
    result = _train(judged, taken)
    assert result.exit_code == 2 and "already exists" in result.output
    missing = runner.invoke(app, ["rerank", "train", "-c", "earth", "--data-dir", str(judged / "data"),
                                  "--queries", str(judged / "queries.jsonl"), "--qrels", str(judged / "nope.tsv"),
                                  "--out", str(tmp_path / "a")])
    assert missing.exit_code == 2 and "nope.tsv: file not found" in missing.output
    unknown = runner.invoke(app, ["rerank", "train", "-c", "sea", "--data-dir", str(judged / "data"),
                                  "--queries", str(judged / "queries.jsonl"), "--qrels", str(judged / "train.tsv"),
                                  "--out", str(tmp_path / "b")])
    assert unknown.exit_code == 2 and "sea" in unknown.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert "hard negatives" in runner.invoke(app, ["rerank", "train", "--help"]).output
