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
from ragsvc.retrieval.rerank import TRAINING_FILE
from ragsvc.retrieval.rerank_train import TrainOptions, mine_groups

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


def test_mine_groups_pair_each_judged_positive_with_unjudged_shortlist_negatives():
    ranked = {"a query": ["p", "n1", "n2", "n3", "n4"], "other": ["p"]}
    texts = {"p": "P", "p2": "P2", "n1": "N1", "n2": "N2", "n3": "N3", "n4": None}
    queries = {"q": "a query", "lost": "no judged text", "alone": "other"}
    qrels = {"q": {"p": 1, "p2": 2, "n3": 0}, "lost": {"gone": 1}, "alone": {"p": 1}}
    groups = mine_groups(queries, qrels, lambda query: ranked.get(query, []), texts.get, negatives=2, candidates=3)
    assert [g.positive for g in groups] == ["P", "P2"]  # "lost" has no text, "alone" no negative to rank against
    for group in groups:
        assert len(group.negatives) == 2 and set(group.negatives) <= {"N1", "N2", "N3"}  # top 3 not relevant
    assert groups == mine_groups(queries, qrels, lambda query: ranked.get(query, []), texts.get, negatives=2,
                                 candidates=3)  # seeded
    with pytest.raises(InvalidInput, match="epochs=0 is out of range"):
        TrainOptions(epochs=0)
    with pytest.raises(InvalidInput, match="head_learning_rate=0.5 is out of range"):
        TrainOptions(head_learning_rate=0.5)


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
                               "--out", str(out), "--negatives", "2", "--batch-size", "2", "--max-length", "48",
                               *extra])


def _summary(output: str) -> dict:  # type: ignore[type-arg]
    found = re.search(r'\{"out".*\}', output)  # the summary line (progress bars share the output)
    assert found is not None, output
    return json.loads(found.group())  # type: ignore[no-any-return]


def test_trains_a_cross_encoder_the_reranker_loads(judged: Path, tmp_path: Path):
    from ragsvc.retrieval.rerank import CrossEncoderReranker
    from ragsvc.types import ChunkId, DocumentId, Hit

    out = tmp_path / "ce"
    result = _train(judged, out, "--epochs", "2", "--holdout", "0")
    assert result.exit_code == 0, result.output
    summary = _summary(result.output)
    assert summary["train"]["queries"] == 3 and summary["train"]["groups"] == 3
    assert summary["train"]["passages"] == 9 and summary["train"]["steps"] == 4  # 3 groups in steps of 2, twice
    assert summary["holdout"] is None
    record = json.loads((out / TRAINING_FILE).read_text())
    assert record["train"] == summary["train"] and record["forced"] is False and record["base"] == "minilm"
    assert record["qrels_file"] == "train.tsv" and str(judged) not in json.dumps(record)  # no machine paths
    reranker = CrossEncoderReranker(out)
    assert reranker.first_stage_weight == record["first_stage_weight"] == 0.5  # served as it was checked
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


def test_the_held_out_check_decides_where_the_model_goes_and_force_overrides_it(judged: Path, tmp_path: Path):
    """Two of the three queries are held out (one chooses the first-stage weight, one judges); whichever way
    the check goes, the model lands where it says, and --force always saves to --out. (Which way it goes is the
    model's business; the pure check's own tests pin down refusing and accepting.)"""
    out = tmp_path / "checked"
    result = _train(judged, out, "--holdout", "0.5", "--max-steps", "1")
    check = _summary(result.output)["holdout"]
    assert check["queries"] == 1 and check["k"] == 10 and len(check["ndcg@10_by_first_stage_weight"]) == 5
    assert check["accepted"] == (check["reranked_ndcg@10"] > check["first_stage_ndcg@10"])
    rejected = tmp_path / "checked.rejected"
    if check["accepted"]:
        assert result.exit_code == 0 and (out / TRAINING_FILE).exists() and not rejected.exists()
    else:
        assert result.exit_code == 2 and "no better than the first stage" in result.output
        assert "--force" in result.output
        assert not out.exists() and json.loads((rejected / TRAINING_FILE).read_text())["holdout"] == check
    forced = _train(judged, tmp_path / "forced", "--holdout", "0.5", "--max-steps", "1", "--force")
    assert forced.exit_code == 0, forced.output
    record = json.loads((tmp_path / "forced" / TRAINING_FILE).read_text())
    assert record["holdout"] == check and record["forced"] == (not check["accepted"])  # same seed, same model
