"""kill -9 soak over HTTP: a few random kill points during an ingest lose no acknowledged document."""

from __future__ import annotations

import pytest

from ragsvc.bench.soak import run_soak


@pytest.mark.slow
def test_random_kills_during_an_ingest_lose_nothing_acknowledged(tmp_path):
    result = run_soak(tmp_path / "data", kills=3, target_documents=300, batch_documents=10, max_kill_delay_s=3.0)
    assert result.acknowledged_documents > 0
    assert result.lost == 0 and result.index_missing == 0, result
    assert result.stored_documents >= result.acknowledged_documents
