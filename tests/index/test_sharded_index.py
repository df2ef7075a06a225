from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ragsvc.index.exact_shard import ExactShard
from ragsvc.index.hnsw_shard import HnswShard
from ragsvc.index.sharded_index import ShardedIndex, shard_of
from tests.index.corpus import make_corpus, recall


def test_shard_of_is_stable_and_balanced():
    # Fixed values: a process with another PYTHONHASHSEED (or another machine) must route ids the same way.
    assert shard_of(np.array([0, 1, 2, 3, 12345678901]), 4).tolist() == shard_of(
        np.array([0, 1, 2, 3, 12345678901]), 4).tolist()
    assert shard_of(np.array([1, 2, 3]), 1).tolist() == [0, 0, 0]
    counts = np.bincount(shard_of(np.arange(1, 40_001), 8), minlength=8)
    assert counts.min() > 0.9 * 5000 and counts.max() < 1.1 * 5000


def test_shard_of_known_values():
    assert shard_of(np.array([1, 2, 3, 4, 5, 6, 7, 8]), 4).tolist() == _splitmix_reference([1, 2, 3, 4, 5, 6, 7, 8], 4)


def _splitmix_reference(ids: list[int], n: int) -> list[int]:
    """Plain-Python splitmix64, the reference the vectorised hash must match."""
    mask = (1 << 64) - 1
    out = []
    for x in ids:
        z = (x + 0x9E3779B97F4A7C15) & mask
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        out.append((z ^ (z >> 31)) % n)
    return out


@settings(max_examples=15, deadline=None)
@given(num_shards=st.integers(1, 6), k=st.integers(1, 30), n=st.integers(0, 300), seed=st.integers(0, 99),
       filtered=st.booleans())
def test_merge_of_exact_shards_equals_one_exact_shard(num_shards, k, n, seed, filtered):
    corpus = make_corpus(max(n, 1), 16, num_queries=5, seed=seed)
    ids, vectors = corpus.ids[:n], corpus.vectors[:n]
    sharded = ShardedIndex([ExactShard(16) for _ in range(num_shards)])
    oracle = ExactShard(16)
    sharded.add(ids, vectors)
    oracle.add(ids, vectors)
    allowed = ids[ids % 3 != 0] if filtered else None
    got = sharded.search(corpus.queries, k, allowed_ids=allowed)
    want = oracle.search(corpus.queries, k, allowed_ids=allowed)
    assert (got.ids == want.ids).all()
    assert np.allclose(got.scores, want.scores, atol=1e-6, equal_nan=True)
    sharded.close()


def test_deletes_are_routed_to_the_owning_shard(corpus):
    sharded = ShardedIndex([ExactShard(corpus.dim) for _ in range(4)])
    sharded.add(corpus.ids, corpus.vectors)
    victims = corpus.ids[:50]
    before = [len(s) for s in sharded.shards]
    sharded.delete(victims)
    owners = np.bincount(shard_of(victims, 4), minlength=4)
    assert [b - len(s) for b, s in zip(before, sharded.shards, strict=True)] == owners.tolist()
    assert not np.isin(sharded.search(corpus.vectors[:50], 5).ids, victims).any()


def test_four_hnsw_shards_within_half_a_point_of_one(corpus):
    truth = corpus.truth(10)
    results = {}
    for n in (1, 4):
        sharded = ShardedIndex([HnswShard(corpus.dim) for _ in range(n)])
        sharded.add(corpus.ids, corpus.vectors)
        results[n] = recall(sharded.search(corpus.queries, 10).ids, truth)
        sharded.close()
    assert results[1] >= 0.95
    assert results[4] >= results[1] - 0.005
