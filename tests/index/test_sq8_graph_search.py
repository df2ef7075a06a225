"""The native walk over faiss's 8-bit HNSW graph against faiss's own search of the same index (the reference).

Real faiss indexes and a real C++ build (g++ is on every machine this project runs on); the test skips, saying
why, only if the kernel cannot be built.
"""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from ragsvc.index.faiss_shard import FaissShard
from ragsvc.index.spec import IndexSpec
from ragsvc.index.sq8_graph_search import Sq8GraphSearcher
from tests.index.corpus import recall

SPEC = IndexSpec(backend="faiss_hnsw", prefix_quant="sq8", hnsw_m=12, ef_search=48)


@pytest.fixture()
def shard(corpus) -> FaissShard:
    built = FaissShard.create(SPEC, corpus.dim, train_sample=corpus.vectors)
    built.add(corpus.ids, corpus.vectors)
    if built._native is None:
        pytest.skip("the native sq8 walk could not be built here (no C++ compiler?)")
    return built


def _faiss_search(shard: FaissShard, query: np.ndarray, k: int, ef: int) -> tuple[np.ndarray, np.ndarray]:
    scores, labels = shard._index.search(query[None, :], k, params=faiss.SearchParametersHNSW(efSearch=ef))
    return scores[0], labels[0]


def test_native_walk_returns_faiss_neighbours_and_scores(shard, corpus):
    overlap, compared = 0.0, 0
    for query in corpus.queries:
        ref_scores, ref_ids = _faiss_search(shard, query, 40, 64)
        native = shard._native.search(query, 40, 64)  # (1, m)
        scores, ids = native.scores[0], native.ids[0]
        assert np.all(np.diff(scores) <= 1e-6)  # best first
        overlap += len(np.intersect1d(ids, ref_ids)) / 40
        _, a, b = np.intersect1d(ref_ids, ids, return_indices=True)
        np.testing.assert_allclose(scores[b], ref_scores[a], rtol=0, atol=1e-5)  # faiss's own 8-bit scores
        compared += len(a)
    assert overlap / len(corpus.queries) >= 0.99  # the same walk: only ties may differ
    assert compared > 0.99 * 40 * len(corpus.queries)


def test_shard_search_uses_native_walk_and_keeps_recall(shard, corpus):
    truth = corpus.truth(10)
    found = np.stack([shard.search(q[None, :], 10).ids[0] for q in corpus.queries])
    assert recall(found, truth) >= 0.95


def test_deleted_ids_route_the_walk_but_are_never_returned(shard, corpus, tmp_path):
    firsts = np.stack([shard.search(q[None, :], 5).ids[0] for q in corpus.queries])
    deleted = np.unique(firsts[:, :2])
    shard.delete(deleted)
    params = shard._params(None, 64)  # faiss's path with the tombstone selector: the reference
    for query in corpus.queries:
        ids = shard.search(query[None, :], 10, ef_search=64).ids[0]  # native
        assert not set(ids.tolist()) & set(deleted.tolist())
        ref = shard._search(query[None, :], 10, params).ids[0]
        assert len(np.intersect1d(ids, ref)) >= 9  # same neighbours up to ties and walk order
    shard.save(tmp_path / "s.faiss")  # tombstones live in the manifest meta and come back with the file
    loaded = FaissShard.load(tmp_path / "s.faiss", spec=SPEC, dim=corpus.dim, meta=shard.manifest_meta())
    for query in corpus.queries[:20]:
        assert not set(loaded.search(query[None, :], 10).ids[0].tolist()) & set(deleted.tolist())


def test_filters_go_to_faiss_and_are_honoured(shard, corpus):
    query = corpus.queries[0]
    allowed = corpus.ids[::7]
    filtered = shard.search(query[None, :], 5, allowed_ids=allowed).ids[0]
    assert set(filtered) <= set(allowed)


def test_growing_index_is_seen_by_the_native_walk(corpus):
    grown = FaissShard.create(SPEC, corpus.dim, train_sample=corpus.vectors)
    half = len(corpus.ids) // 2
    grown.add(corpus.ids[:half], corpus.vectors[:half])
    if grown._native is None:
        pytest.skip("the native sq8 walk could not be built here (no C++ compiler?)")
    grown.add(corpus.ids[half:], corpus.vectors[half:])  # faiss may reallocate every array: views are re-taken
    target = corpus.vectors[-1]
    ids = grown.search(target[None, :], 1).ids[0]
    assert ids[0] == corpus.ids[-1]


def test_supports_only_8bit_inner_product_graphs(corpus):
    l2 = FaissShard.create(IndexSpec(backend="faiss_hnsw", prefix_quant="sq8", metric="l2"), corpus.dim,
                           train_sample=corpus.vectors)
    flat = FaissShard.create(IndexSpec(backend="faiss_hnsw"), corpus.dim)
    sq4 = FaissShard.create(IndexSpec(backend="faiss_hnsw", prefix_quant="sq4"), corpus.dim,
                            train_sample=corpus.vectors)
    assert not any(Sq8GraphSearcher.supports(s._index) for s in (l2, flat, sq4))
    assert l2._native is None and flat._native is None and sq4._native is None


def test_empty_graph_returns_nothing(corpus):
    empty = FaissShard.create(SPEC, corpus.dim, train_sample=corpus.vectors)
    if empty._native is None:
        pytest.skip("the native sq8 walk could not be built here (no C++ compiler?)")
    native = empty._native.search(corpus.queries[0], 10, 32)
    assert native.ids.shape == native.scores.shape == (1, 0)
