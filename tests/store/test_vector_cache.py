"""Per-chunk vector caches: hits and misses by text hash, replacement, LRU bound, and invalidation when the
catalog deletes the chunks (document delete, document replace, collection delete) and after reopening."""

import numpy as np
import pytest

from ragsvc.errors import InvalidInput
from ragsvc.index.spec import IndexSpec
from ragsvc.store.catalog import Catalog
from ragsvc.store.records import CollectionRecord, PreparedChunk, PreparedDocument
from ragsvc.store.vector_cache import DuckdbVectorCache, InMemoryVectorCache, VectorCache

DIM = 8


def _doc(doc_id: str, n_chunks: int, hash_: str = "h") -> PreparedDocument:
    rng = np.random.default_rng(0)
    chunks = [PreparedChunk(f"{doc_id} part {i}", i * 10, i * 10 + 9, {}, f"{doc_id}-{i}",
                            rng.standard_normal(DIM).astype(np.float32)) for i in range(n_chunks)]
    return PreparedDocument(doc_id, None, hash_, {}, f"text of {doc_id}", chunks)


@pytest.fixture()
def catalog(tmp_path):
    cat = Catalog(tmp_path / "catalog.duckdb")
    cat.create_collection(CollectionRecord("c", "test-8", DIM, IndexSpec(), 64, 8))
    yield cat
    cat.close()


@pytest.fixture(params=["memory", "duckdb"])
def cache(request, catalog) -> VectorCache:
    return InMemoryVectorCache() if request.param == "memory" else catalog.vector_cache()


def _vectors(n: int, seed: int = 0, dim: int = 4) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def test_get_returns_only_entries_with_the_same_text_hash(cache):
    assert isinstance(cache, VectorCache)
    vecs = _vectors(3)
    cache.put("e", [1, 2, 3], ["a", "b", "c"], vecs)
    got = cache.get("e", [1, 2, 3, 4], ["a", "B", "c", "d"])
    assert sorted(got) == [1, 3]
    np.testing.assert_array_equal(got[1], vecs[0])
    np.testing.assert_array_equal(got[3], vecs[2])
    assert cache.get("other-embedder", [1], ["a"]) == {}
    assert cache.get("e", [], []) == {}


def test_put_replaces_an_entry(cache):
    cache.put("e", [1], ["a"], _vectors(1, seed=1))
    new = _vectors(1, seed=2)
    cache.put("e", [1], ["a2"], new)
    assert cache.get("e", [1], ["a"]) == {}
    np.testing.assert_array_equal(cache.get("e", [1], ["a2"])[1], new[0])


def test_put_refuses_misaligned_input(cache):
    with pytest.raises(InvalidInput, match="one text hash and one vector row"):
        cache.put("e", [1, 2], ["a"], _vectors(2))


def test_memory_cache_is_a_bounded_lru():
    cache = InMemoryVectorCache(max_entries=2)
    cache.put("e", [1, 2], ["a", "b"], _vectors(2))
    cache.get("e", [1], ["a"])  # 1 is now the most recent
    cache.put("e", [3], ["c"], _vectors(1))
    assert len(cache) == 2
    assert sorted(cache.get("e", [1, 2, 3], ["a", "b", "c"])) == [1, 3]


def test_catalog_deletes_entries_with_their_chunks(catalog, tmp_path):
    written = catalog.write_documents("c", [_doc("a", 2), _doc("b", 2)], embedder_id="test-8")
    ids = [int(i) for i in written.added_ids]
    cache = catalog.vector_cache()
    cache.put("rerank", ids, ["h"] * 4, _vectors(4))
    cache.put("other", ids[:1], ["h"], _vectors(1))
    assert cache.count() == 5

    removed = catalog.delete_document("c", "a")
    assert cache.count() == 5 - 3 and sorted(cache.get("rerank", ids, ["h"] * 4)) == ids[2:]
    assert not set(int(i) for i in removed) & set(cache.get("rerank", ids, ["h"] * 4))

    catalog.write_documents("c", [_doc("b", 1, hash_="h2")], embedder_id="test-8")  # replace: b's ids are gone
    assert cache.count() == 0

    again = catalog.write_documents("c", [_doc("d", 2)], embedder_id="test-8")
    cache.put("rerank", [int(i) for i in again.added_ids], ["h", "h"], _vectors(2))
    catalog.close()
    reopened = Catalog(tmp_path / "catalog.duckdb")
    try:
        assert isinstance(reopened.vector_cache(), DuckdbVectorCache)
        assert reopened.vector_cache().count("rerank") == 2
        reopened.delete_collection("c")
        assert reopened.vector_cache().count() == 0
    finally:
        reopened.close()
