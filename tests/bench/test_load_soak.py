"""kill -9 soaks, HTTP and CLI: a few random kill points during one ingest lose no acknowledged document, store
none twice, and leave indexes that find what the catalog holds."""

from __future__ import annotations

import pytest

from ragsvc.bench.soak import run_soak, soak_documents
from ragsvc.bench.soak_cli import run_cli_soak


def test_the_soak_sequence_is_fixed_and_distinct():
    docs = soak_documents(500)
    assert docs == soak_documents(500) and len({d["id"] for d in docs}) == len({d["text"] for d in docs}) == 500


def test_bad_settings_are_refused_before_anything_runs(tmp_path):
    with pytest.raises(ValueError, match="kills must be"):
        run_soak(tmp_path / "data", kills=-1)
    with pytest.raises(ValueError, match="kills must be"):
        run_cli_soak(tmp_path / "cli", embedder_factory=lambda: None, num_documents=0)  # type: ignore[arg-type,return-value]
    assert not (tmp_path / "data").exists() and not (tmp_path / "cli").exists()


@pytest.mark.slow
def test_random_kills_during_an_http_ingest_lose_nothing_acknowledged(tmp_path):
    result = run_soak(tmp_path / "data", kills=3, target_documents=300, batch_documents=10, max_kill_delay_s=3.0)
    assert result.acknowledged_documents == 300 and sum(result.acknowledged_per_round) <= 300
    assert result.lost == 0 and result.duplicates == 0 and result.index_missing == 0, result
    assert result.stored_documents == result.stored_chunks == 300
    assert result.index_checked == 200


@pytest.mark.slow
def test_random_kills_of_the_cli_ingest_then_resume_store_each_document_once(tmp_path, minilm):
    result = run_cli_soak(tmp_path / "cli", embedder_factory=lambda: minilm, kills=2, num_documents=400,
                          batch_size=16, max_kill_delay_s=2.0)
    assert result.kills_before_exit >= 1, "at least one kill found the command running"
    assert result.stored_per_round[0] > 0, "the first kill came after a committed batch"
    assert result.lost_between_rounds == 0 and result.missing == 0 and result.duplicates == 0, result
    assert result.stored_documents == result.stored_chunks == 400 and result.index_missing == 0
