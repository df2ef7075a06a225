"""Identical vectors go into the HNSW graph once (`twins.py`): the bookkeeping alone, then a real hnswlib shard
that a cluster of copies used to trap, through deletes, filters, save and load, and a collection end to end."""

from __future__ import annotations

import numpy as np
import pytest

from ragsvc.index.hnsw_shard import HnswShard
from ragsvc.index.manifest import ShardMeta
from ragsvc.index.twins import Twins

DIM = 32


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_copies_are_recorded_beside_the_first_and_stand_for_themselves_in_hits():
    rng = np.random.default_rng(0)
    a, b = _unit(rng, 2)
    graph: dict[int, np.ndarray] = {}
    twins = Twins()
    ids, rows = twins.place(np.array([1, 2, 3, 4]), np.stack([a, a, b, a]), graph.__getitem__)
    assert ids.tolist() == [1, 3] and np.array_equal(rows, np.stack([a, b]))
    graph.update(zip(ids.tolist(), rows, strict=True))
    assert twins.members(1) == [1, 2, 4] and twins.members(3) == [3]
    assert twins.reps_for(np.array([4, 3])) == {1, 3}
    assert twins.remove([1]) == [] and twins.members(1) == [2, 4]  # hidden: its node stays for 2 and 4
    assert twins.remove([2]) == [] and twins.remove([4]) == [1]  # the last twin takes the node with it
    assert twins.remove([3]) == [3] and twins.num_twins == 0 and twins.num_hidden == 0


def test_a_node_given_a_new_vector_hands_its_old_one_to_a_twin():
    rng = np.random.default_rng(1)
    a, c = _unit(rng, 2)
    graph: dict[int, np.ndarray] = {}
    twins = Twins()
    ids, rows = twins.place(np.array([1, 2, 3]), np.stack([a, a, a]), graph.__getitem__)
    graph.update(zip(ids.tolist(), rows, strict=True))
    ids, rows = twins.place(np.array([1]), c[None], graph.__getitem__)  # 1 changes; 2 and 3 keep `a`
    assert ids.tolist() == [2, 1] and np.array_equal(rows, np.stack([a, c]))
    assert twins.members(2) == [2, 3] and twins.members(1) == [1]


def test_saved_twins_round_trip_through_the_manifest_entry():
    twins = Twins.from_arrays(np.array([[5, 1], [6, 1], [9, 7]]), np.array([1]))
    pairs, hidden = twins.to_arrays()
    meta = ShardMeta.from_dict(ShardMeta(num_deleted=0, twins=tuple(pairs.reshape(-1).tolist()),
                                         hidden=tuple(hidden.tolist())).to_dict())
    again = Twins.from_arrays(np.asarray(meta.twins).reshape(-1, 2), np.asarray(meta.hidden))
    assert again.members(1) == [5, 6] and again.members(7) == [7, 9]
    with pytest.raises(ValueError, match="pairs"):
        ShardMeta.from_dict({"twins": [1, 2, 3]})


@pytest.fixture()
def trapped():
    """60 distinct vectors, then 2,000 copies of one more: without twins, hnswlib's neighbour heuristic links
    the copies only to each other and searches entering the cluster return copies."""
    rng = np.random.default_rng(2)
    real = _unit(rng, 60)
    junk = _unit(rng, 1)[0]
    queries = real + 0.2 * _unit(rng, 60)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    shard = HnswShard(DIM)
    shard.add(np.arange(60), real)
    shard.add(np.arange(1000, 3000), np.repeat(junk[None], 2000, axis=0))
    return shard, real, junk, queries


def test_a_cluster_of_copies_does_not_trap_searches(trapped):
    shard, real, junk, queries = trapped
    hits = shard.search(queries, 5)
    # the exact top-5 scores over every vector (the copies are one point; ties make ids the wrong yardstick);
    # the same data in a bare hnswlib graph gets them for none of the 60 queries
    truth = -np.sort(-(queries @ np.vstack([real, junk[None]]).T), axis=1)[:, :5]
    exact = np.all(np.abs(hits.scores - truth) < 1e-4, axis=1)
    assert exact.mean() >= 0.95
    assert len(shard) == 2060 and len(shard.live_ids()) == 2060
    near_junk = shard.search(junk[None], 4)  # the copies are the nearest: each answers with the same score
    assert set(near_junk.ids[0].tolist()) <= set(range(1000, 3000)) and np.allclose(near_junk.scores[0], 1.0)
    found, vectors = shard.get(np.array([1500, 7, 99_999]))
    assert found.tolist() == [1500, 7] and np.array_equal(vectors[0], junk)


def test_deletes_and_filters_reach_the_copies(trapped):
    shard, real, junk, _ = trapped
    shard.delete(np.array([1000]))  # the copy in the graph: hidden, the others still answer
    hits = shard.search(junk[None], 3)
    assert 1000 not in hits.ids[0] and set(hits.ids[0].tolist()) <= set(range(1001, 3000))
    only = shard.search(junk[None], 3, allowed_ids=np.array([2500, 5]))  # a filter that admits one copy
    assert only.ids[0].tolist()[:2] == [2500, 5]
    shard.delete(np.arange(1001, 3000))
    assert len(shard) == 60 and (shard.search(junk[None], 5).ids[0] < 60).all()


def test_twins_survive_save_and_load_and_later_copies_still_match(tmp_path, trapped):
    shard, real, junk, queries = trapped
    shard.delete(np.array([1000]))
    path = tmp_path / "s.hnsw"
    shard.save(path)
    meta = shard.manifest_meta()
    loaded = HnswShard.load(path, dim=DIM, num_deleted=meta.num_deleted or 0,
                            twins=np.asarray(meta.twins).reshape(-1, 2), hidden=np.asarray(meta.hidden))
    assert len(loaded) == len(shard) == 2059
    assert (loaded.search(queries, 5).ids == shard.search(queries, 5).ids).all()
    loaded.add(np.array([5000]), junk[None])  # a copy arriving after the load joins the others
    assert len(loaded._graph_labels()) == 61 and 5000 in loaded.live_ids()


def test_a_collection_with_a_document_of_repeated_chunks_still_finds_the_others(tmp_path, minilm):
    """The field case: one document of many identical chunks took every hit of every query."""
    from ragsvc.retrieval.vector_store import VectorStore
    from ragsvc.types import DocumentInput

    store = VectorStore.open(tmp_path / "data", embedder=minilm)
    store.create_collection("c")
    topics = ["paged attention keeps the KV cache in fixed-size blocks",
              "BM25 ranks documents by term frequency and rarity",
              "duckdb stores tables in a single file with transactions"]
    store.add_documents("c", [DocumentInput(text=t, id=f"t{i}") for i, t in enumerate(topics)])
    store.add_documents("c", [DocumentInput(text="word " * 40_000, id="junk")])  # ~200 identical chunks
    hits = store.search("c", query="how does paged attention save memory?", k=3).hits
    assert hits[0].document_id == "t0"
    store.close()


def test_a_graph_saved_with_copies_in_it_is_refused_at_load_so_it_is_rebuilt(tmp_path):
    """Files from before twins hold copies in the graph: loading them without the manifest's word that copies
    were kept out reads the graph once and refuses it (IndexCorrupt: the collection rebuilds from the catalog)."""
    from ragsvc.errors import IndexCorrupt

    rng = np.random.default_rng(3)
    real, junk = _unit(rng, 40), _unit(rng, 1)[0]
    old = HnswShard(DIM)
    old.add(np.arange(40), real)
    old._index.add_items(np.repeat(junk[None], 50, axis=0), np.arange(100, 150))  # as the old code stored them
    old.save(tmp_path / "old.hnsw")
    with pytest.raises(IndexCorrupt, match="49 copies"):
        HnswShard.load(tmp_path / "old.hnsw", dim=DIM)
    fresh = HnswShard(DIM)
    fresh.add(np.arange(40), real)
    fresh.add(np.arange(100, 150), np.repeat(junk[None], 50, axis=0))
    fresh.save(tmp_path / "new.hnsw")
    meta = ShardMeta.from_dict(fresh.manifest_meta().to_dict())
    assert meta.twins_checked
    loaded = HnswShard.load(tmp_path / "new.hnsw", dim=DIM, twins=np.asarray(meta.twins).reshape(-1, 2),
                            twins_checked=True)
    assert len(loaded) == 90 and loaded._keys_known  # keys read at load, not under a later add's write lock
    unchecked = HnswShard.load(tmp_path / "new.hnsw", dim=DIM, twins=np.asarray(meta.twins).reshape(-1, 2))
    assert len(unchecked) == 90  # no copies in its graph: accepted without the manifest's word


@pytest.mark.parametrize("quant", ["none", "sq8"])
def test_faiss_hnsw_keeps_copies_out_of_its_graph_too(tmp_path, quant):
    from ragsvc.errors import IndexCorrupt
    from ragsvc.index.faiss_shard import FaissShard
    from ragsvc.index.spec import IndexSpec

    rng = np.random.default_rng(4)
    real, junk = _unit(rng, 300), _unit(rng, 1)[0]
    queries = real[:60] + 0.2 * _unit(rng, 60)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    spec = IndexSpec(backend="faiss_hnsw", prefix_quant=quant)
    shard = FaissShard.create(spec, DIM, train_sample=real if quant != "none" else None)
    shard.add(np.arange(300), real)
    shard.add(np.arange(1000, 2500), np.repeat(junk[None], 1500, axis=0))
    assert len(shard) == 1800 and len(shard.live_ids()) == 1800
    hits = shard.search(queries, 5)
    truth = -np.sort(-(queries @ np.vstack([real, junk[None]]).T), axis=1)[:, :5]
    tolerance = 1e-4 if quant == "none" else 0.05  # 8-bit codes score approximately
    assert np.mean(np.all(np.abs(hits.scores - truth) < tolerance, axis=1)) >= 0.9
    shard.delete(np.array([1000]))  # the copy in the graph: hidden, its twins still answer
    near = shard.search(junk[None], 3, allowed_ids=np.array([2000, 7]))
    assert near.ids[0].tolist()[:2] == [2000, 7]
    path = tmp_path / "s.faiss"
    shard.save(path)
    meta = shard.manifest_meta()
    loaded = FaissShard.load(path, spec=spec, dim=DIM, meta=meta)
    assert len(loaded) == 1799 and (loaded.search(queries, 5).ids == shard.search(queries, 5).ids).all()
    old = FaissShard.create(spec, DIM, train_sample=real if quant != "none" else None)
    old._index.add_with_ids(np.repeat(junk[None], 20, axis=0), np.arange(20))  # as the old code stored them
    old._refresh_count()
    old.save(tmp_path / "old.faiss")
    with pytest.raises(IndexCorrupt, match="19 copies"):  # saved by the old code, no word in the manifest
        FaissShard.load(tmp_path / "old.faiss", spec=spec, dim=DIM, meta=ShardMeta())
