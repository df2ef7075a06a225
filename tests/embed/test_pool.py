"""The process-pool embedder: the same vectors as the in-process embedder, in order, under the same id."""

import numpy as np
import pytest

from ragsvc.config import EmbedSettings
from ragsvc.embed.embedder import embedder_from_settings
from ragsvc.embed.pool import ProcessPoolEmbedder

TEXTS = [f"Sentence {i} about {topic}." for i, topic in enumerate(
    ["tides", "glaciers", "volcanoes", "paged attention", "duckdb", "HNSW graphs", "BM25", "FLARE"])]


@pytest.mark.slow
def test_pool_vectors_equal_the_in_process_ones_in_order():
    settings = EmbedSettings(precision="float32", sort_by_length=True)
    local = embedder_from_settings(settings)
    with ProcessPoolEmbedder(settings, num_workers=2, expected_id=local.id, num_threads=1) as pool:
        pooled = pool.embed(TEXTS)
        single = pool.embed(TEXTS[:1])  # fewer texts than workers
    expected = local.embed_documents(TEXTS)
    assert pooled.shape == expected.shape == (8, local.dim)
    assert float(np.min(np.sum(pooled * expected, axis=1))) > 0.9999
    assert float(np.sum(single[0] * expected[0])) > 0.9999
    with pytest.raises(ValueError, match="not 'other-384'"):
        ProcessPoolEmbedder(settings, num_workers=1, expected_id="other-384")


def test_bad_worker_count_is_refused_before_starting_anything():
    with pytest.raises(ValueError, match="num_workers"):
        ProcessPoolEmbedder(EmbedSettings(), num_workers=0, expected_id="x")
