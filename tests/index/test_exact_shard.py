from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ragsvc.errors import DimensionMismatch, IndexCorrupt, InvalidInput
from ragsvc.index.exact_shard import ExactShard
from ragsvc.index.shard import top_k


def test_exact_matches_brute_force_sorting(corpus):
    shard = ExactShard(corpus.dim)
    shard.add(corpus.ids, corpus.vectors)
    hits = shard.search(corpus.queries[:5], 7)
    full = corpus.queries[:5] @ corpus.vectors.T
    expected = corpus.ids[np.argsort(-full, axis=1)[:, :7]]
    assert (hits.ids == expected).all()
    assert np.allclose(hits.scores, np.sort(full, axis=1)[:, ::-1][:, :7], atol=1e-5)
    assert hits.ids.dtype == np.int64 and hits.scores.dtype == np.float32


def test_k_larger_than_collection_pads_with_minus_one():
    shard = ExactShard(4)
    shard.add(np.array([10, 11]), np.eye(4, dtype=np.float32)[:2])
    hits = shard.search(np.eye(4, dtype=np.float32)[0], 5)
    assert hits.ids.tolist() == [[10, 11, -1, -1, -1]]
    assert np.isneginf(hits.scores[0, 2:]).all()


def test_filter_and_delete():
    shard = ExactShard(4, metric="l2")
    shard.add(np.arange(4), np.eye(4, dtype=np.float32))
    ids = shard.search(np.eye(4, dtype=np.float32)[2], 3, allowed_ids=np.array([1, 2, 99])).ids
    assert ids.tolist() == [[2, 1, -1]]
    shard.delete(np.array([2, 42]))
    assert len(shard) == 3
    assert 2 not in shard.search(np.eye(4, dtype=np.float32)[2], 4).ids


def test_readd_replaces_vector():
    shard = ExactShard(2)
    shard.add(np.array([1]), np.array([[1.0, 0.0]], np.float32))
    shard.add(np.array([1]), np.array([[0.0, 1.0]], np.float32))
    assert len(shard) == 1
    assert shard.search(np.array([0.0, 1.0], np.float32), 1).scores[0, 0] == pytest.approx(1.0)


def test_bad_input_is_refused_and_nothing_changes():
    shard = ExactShard(3)
    with pytest.raises(DimensionMismatch):
        shard.add(np.array([1]), np.ones((1, 4), np.float32))
    with pytest.raises(InvalidInput, match="NaN"):
        shard.add(np.array([1]), np.array([[np.nan, 0, 0]], np.float32))
    with pytest.raises(InvalidInput, match="unique"):
        shard.add(np.array([1, 1]), np.ones((2, 3), np.float32))
    with pytest.raises(DimensionMismatch):
        shard.search(np.ones(4, np.float32), 1)
    assert len(shard) == 0


def test_save_load_round_trip_and_garbage(tmp_path, corpus):
    shard = ExactShard(corpus.dim)
    shard.add(corpus.ids, corpus.vectors)
    shard.save(tmp_path / "s.npz")
    loaded = ExactShard.load(tmp_path / "s.npz", dim=corpus.dim)
    assert (loaded.search(corpus.queries, 5).ids == shard.search(corpus.queries, 5).ids).all()
    (tmp_path / "bad.npz").write_bytes(b"not a numpy file")
    with pytest.raises(IndexCorrupt):
        ExactShard.load(tmp_path / "bad.npz", dim=corpus.dim)
    with pytest.raises(IndexCorrupt):
        ExactShard.load(tmp_path / "s.npz", dim=corpus.dim + 1)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-5, 5, width=32), min_size=1, max_size=30), st.integers(1, 40))
def test_top_k_is_sorted_prefix_of_full_sort(values, k):
    scores = np.array([values], np.float32)
    ids = np.arange(len(values), dtype=np.int64)[None, :]
    best = top_k(scores, ids, k)
    order = np.lexsort((ids[0], -scores[0]))[:k]
    assert best.ids[0, : len(order)].tolist() == ids[0, order].tolist()
    assert (best.ids[0, len(order) :] == -1).all()
    assert np.all(np.diff(best.scores[0, : len(order)]) <= 0)
