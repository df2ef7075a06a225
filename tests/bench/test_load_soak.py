"""kill -9 soaks, HTTP and CLI: a few random kill points during one ingest lose no acknowledged document, store
none twice, and leave indexes that find what the catalog holds."""

from __future__ import annotations

import random

import pytest

from ragsvc.bench.soak import kill_points, run_soak, soak_documents
from ragsvc.bench.soak_cli import run_cli_soak


def test_the_soak_sequence_is_fixed_and_distinct():
    docs = soak_documents(500)
    assert docs == soak_documents(500) and len({d["id"] for d in docs}) == len({d["text"] for d in docs}) == 500


def test_kill_points_cover_the_whole_ingest_one_per_span():
    points = kill_points(random.Random(3), 401, 20)
    assert points == sorted(points) and len(points) == 20
    assert [p // 20 for p in points] == list(range(20)), "one point in each twentieth of the sequence"
    assert max(points) <= 399, "the last batch is left for the last kill to land in"
    assert kill_points(random.Random(0), 2, 5) == [0] * 5 and kill_points(random.Random(0), 1, 0) == []
    with pytest.raises(ValueError, match="at least two batches"):
        kill_points(random.Random(0), 1, 1)


def test_bad_settings_are_refused_before_anything_runs(tmp_path):
    with pytest.raises(ValueError, match="kills must be"):
        run_soak(tmp_path / "data", kills=-1)
    with pytest.raises(ValueError, match="kills must be"):
        run_cli_soak(tmp_path / "cli", embedder_factory=lambda: None, num_documents=0)  # type: ignore[arg-type,return-value]
    assert not (tmp_path / "data").exists() and not (tmp_path / "cli").exists()


@pytest.mark.slow
def test_random_kills_during_an_http_ingest_lose_nothing_acknowledged(tmp_path):
    result = run_soak(tmp_path / "data", kills=3, target_documents=300, batch_documents=10)
    assert result.acknowledged_documents == 300 and sum(result.acknowledged_per_round) <= 300
    assert result.kills_mid_request >= 2, "kills aimed along the ingest find it running"
    assert result.kill_points == sorted(result.kill_points) and result.kill_points[-1] >= 190, "spread to the end"
    assert result.lost == 0 and result.duplicates == 0 and result.index_missing == 0, result
    assert result.stored_documents == result.stored_chunks == 300
    assert result.index_checked == 200


@pytest.mark.slow
def test_random_kills_of_the_cli_ingest_then_resume_store_each_document_once(tmp_path, minilm):
    result = run_cli_soak(tmp_path / "cli", embedder_factory=lambda: minilm, kills=2, num_documents=400,
                          batch_size=16)
    assert result.kills_before_exit == 2, "kills aimed along the corpus find the command running"
    assert result.kill_points[0] < 192 <= result.kill_points[1], "one kill in each half of the 25 batches"
    assert result.stored_per_round[0] > 0, "the first kill came after a committed batch"
    assert result.lost_between_rounds == 0 and result.missing == 0 and result.duplicates == 0, result
    assert result.stored_documents == result.stored_chunks == 400 and result.index_missing == 0
