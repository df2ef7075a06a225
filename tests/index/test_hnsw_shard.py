from __future__ import annotations

import numpy as np
import pytest

from ragsvc.errors import DimensionMismatch, IndexCorrupt
from ragsvc.index.hnsw_shard import HnswShard
from tests.index.corpus import recall


def _built(corpus, **options) -> HnswShard:
    shard = HnswShard(corpus.dim, **options)
    shard.add(corpus.ids, corpus.vectors)
    return shard


def test_hnsw_recall_vs_exact_and_after_save_load(tmp_path, corpus):
    shard = _built(corpus)
    truth = corpus.truth(10)
    found = shard.search(corpus.queries, 10).ids
    assert recall(found, truth) >= 0.95
    shard.save(tmp_path / "s.hnsw")
    loaded = HnswShard.load(tmp_path / "s.hnsw", dim=corpus.dim)
    assert (loaded.search(corpus.queries, 10).ids == found).all()


def test_capacity_grows_past_the_initial_size(corpus):
    shard = HnswShard(corpus.dim, capacity=16)
    for start in range(0, 600, 100):  # many adds past the 16-element start: hnswlib would refuse without resize
        shard.add(corpus.ids[start : start + 100], corpus.vectors[start : start + 100])
    assert len(shard) == 600


def test_scores_are_inner_products(corpus):
    shard = _built(corpus)
    hits = shard.search(corpus.queries[:1], 3)
    expected = corpus.vectors[hits.ids[0] - 1] @ corpus.queries[0]
    assert np.allclose(hits.scores[0], expected, atol=1e-5)


def test_k_larger_than_collection_and_filter_leaving_fewer_than_k(corpus):
    shard = HnswShard(corpus.dim)
    shard.add(corpus.ids[:5], corpus.vectors[:5])
    assert sorted(shard.search(corpus.queries[:1], 50).ids[0][:5].tolist()) == [1, 2, 3, 4, 5]
    assert (shard.search(corpus.queries[:1], 50).ids[0][5:] == -1).all()
    ids = shard.search(corpus.queries[:1], 4, allowed_ids=np.array([2, 4, 77])).ids
    assert sorted(ids[0][:2].tolist()) == [2, 4] and (ids[0][2:] == -1).all()


def test_filter_inside_search_matches_exact_on_the_subset(corpus):
    shard = _built(corpus)
    allowed = corpus.ids[corpus.ids % 3 == 0]
    found = shard.search(corpus.queries, 10, allowed_ids=allowed).ids
    assert np.isin(found[found >= 0], allowed).all()
    assert recall(found, corpus.truth(10, allowed=allowed)) >= 0.95


def test_delete_then_readd(corpus):
    shard = _built(corpus)
    top = int(shard.search(corpus.queries[:1], 1).ids[0, 0])
    shard.delete(np.array([top, 10**9]))  # an unknown id is ignored
    assert len(shard) == len(corpus.ids) - 1
    assert top not in shard.search(corpus.queries[:1], 10).ids
    shard.add(np.array([top]), corpus.vectors[top - 1 : top])
    assert len(shard) == len(corpus.ids)
    assert int(shard.search(corpus.queries[:1], 1).ids[0, 0]) == top


def test_non_contiguous_and_float64_input_is_accepted(corpus):
    shard = HnswShard(corpus.dim)
    strided = np.asfortranarray(corpus.vectors[:50].astype(np.float64))  # hnswlib alone would need C-contiguous f32
    shard.add(corpus.ids[:50], strided)
    assert len(shard) == 50
    with pytest.raises(DimensionMismatch):
        shard.search(corpus.queries[:1, :10], 1)


def test_truncated_file_is_reported_as_corrupt(tmp_path, corpus):
    shard = _built(corpus)
    shard.save(tmp_path / "s.hnsw")
    data = (tmp_path / "s.hnsw").read_bytes()
    (tmp_path / "s.hnsw").write_bytes(data[: len(data) // 3])
    with pytest.raises(IndexCorrupt):
        HnswShard.load(tmp_path / "s.hnsw", dim=corpus.dim)


class _RefusingIndex:
    """An hnswlib index whose adds fail the way pybind11 reports a C++ exception."""

    def __init__(self, inner: object) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    def add_items(self, *args: object, **kwargs: object) -> None:
        raise RuntimeError("Cannot insert elements with the same label")


def test_a_refused_add_is_index_corrupt(corpus):
    shard = _built(corpus)
    shard._index = _RefusingIndex(shard._index)
    with pytest.raises(IndexCorrupt, match="rebuild the index"):
        shard.add(corpus.ids[:1] + 10**6, corpus.vectors[:1] + 0.5)  # a new vector: a copy would be a twin
