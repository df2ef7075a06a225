"""The catalog's read caches: a collection's record and its hits' rows are served from memory, yet nothing a
committed change removed or replaced is ever served again, including by a read that raced the change."""

import duckdb
import numpy as np
import pytest

from ragsvc.errors import CollectionNotFound
from ragsvc.index.spec import IndexSpec
from ragsvc.store.catalog import Catalog
from ragsvc.store.read_cache import ReadCache
from ragsvc.store.records import CollectionRecord, PreparedChunk, PreparedDocument

DIM = 8


@pytest.fixture()
def catalog(tmp_path):
    cat = Catalog(tmp_path / "catalog.duckdb", hit_cache_chunks=4)
    cat.create_collection(CollectionRecord("c", "test-8", DIM, IndexSpec(), 64, 8))
    yield cat
    cat.close()


def _doc(doc_id: str, n_chunks: int, *, text: str = "part", hash_: str = "h") -> PreparedDocument:
    rng = np.random.default_rng(len(doc_id) + n_chunks)
    chunks = [PreparedChunk(f"{doc_id} {text} {i}", 0, 9, {"i": i}, f"{doc_id}-{text}-{i}",
                            rng.standard_normal(DIM).astype(np.float32)) for i in range(n_chunks)]
    return PreparedDocument(doc_id, None, hash_, {"doc": doc_id}, f"text of {doc_id}", chunks)


def test_the_cache_is_a_bounded_lru_and_refuses_fills_an_invalidation_overtook():
    cache: ReadCache[int, str] = ReadCache(max_items=2)
    assert cache.fill({1: "a", 2: "b"}, generation=cache.generation())
    assert cache.get(1) == "a"  # 1 is now the most recently used
    cache.fill({3: "c"}, generation=cache.generation())
    assert cache.get_many([1, 2, 3]) == {1: "a", 3: "c"} and len(cache) == 2
    before = cache.generation()  # a read begins ...
    cache.invalidate([1])  # ... a change commits and drops 1 ...
    assert not cache.fill({1: "stale"}, generation=before), "... so the read's old row is not stored"
    assert cache.get(1) is None and cache.get(3) == "c"
    cache.invalidate()
    assert len(cache) == 0
    with pytest.raises(ValueError, match="max_items"):
        ReadCache(max_items=-1)


def test_a_cache_given_sizes_holds_at_most_its_bytes_and_skips_an_entry_larger_than_all():
    cache: ReadCache[int, str] = ReadCache(max_items=100, max_bytes=10, size=len)
    cache.fill({1: "aaaa", 2: "bbbb"}, generation=cache.generation())
    assert cache.num_bytes == 8
    cache.fill({3: "cccc"}, generation=cache.generation())  # 12 > 10: the least recently used goes
    assert cache.get_many([1, 2, 3]) == {2: "bbbb", 3: "cccc"} and cache.num_bytes == 8
    cache.fill({2: "bb"}, generation=cache.generation())  # a refill replaces, and re-weighs
    assert cache.num_bytes == 6
    cache.fill({4: "x" * 11}, generation=cache.generation())
    assert cache.get(4) is None and cache.num_bytes == 6
    cache.invalidate([3])
    assert cache.num_bytes == 2
    cache.invalidate()
    assert cache.num_bytes == 0 and len(cache) == 0
    with pytest.raises(ValueError, match="go together"):
        ReadCache(max_items=1, max_bytes=10)


def test_the_hit_cache_is_bounded_by_characters_too(catalog):
    """Rows may carry up to tens of KiB of metadata each, so a count of rows alone bounds no memory."""
    catalog._hits = ReadCache(max_items=100, max_bytes=3000, size=lambda row: sum(map(len, row)))
    doc = _doc("big", 3)
    doc.chunks[:] = [PreparedChunk(c.text, c.start_char, c.end_char, {"blob": "x" * 1000}, c.text_hash, c.vector)
                     for c in doc.chunks]
    ids = [int(i) for i in catalog.write_documents("c", [doc], embedder_id="test-8").added_ids]
    assert len(catalog.hydrate(ids)) == 3
    assert len(catalog._hits) == 2 and catalog._hits.num_bytes <= 3000


def test_a_deleted_or_recreated_collection_is_never_served_from_the_cache(catalog):
    assert catalog.get_collection("c") is catalog.get_collection("c"), "the second read came from memory"
    catalog.delete_collection("c")
    with pytest.raises(CollectionNotFound):
        catalog.get_collection("c")
    catalog.create_collection(CollectionRecord("c", "other-4", 4, IndexSpec(), 32, 0))
    assert (catalog.get_collection("c").embedder_id, catalog.get_collection("c").dim) == ("other-4", 4)


def test_hydrate_serves_cached_rows_but_never_deleted_or_replaced_chunks(catalog):
    added = catalog.write_documents("c", [_doc("a", 2), _doc("b", 1)], embedder_id="test-8").added_ids
    ids = [int(i) for i in added]
    first = catalog.hydrate(ids)
    assert first[ids[2]] == ("b", "b part 0", {"i": 0})
    first[ids[2]][2]["i"] = 99  # a caller changing its metadata changes no one else's
    assert catalog.hydrate(ids) == {**first, ids[2]: ("b", "b part 0", {"i": 0})}

    catalog.delete_document("c", "a")
    assert catalog.hydrate(ids) == {ids[2]: ("b", "b part 0", {"i": 0})}
    replaced = catalog.write_documents("c", [_doc("b", 1, text="new", hash_="h2")], embedder_id="test-8",
                                       stored_ids=["b"])
    assert list(replaced.removed_ids) == [ids[2]]
    assert catalog.hydrate([*ids, int(replaced.added_ids[0])]) == {int(replaced.added_ids[0]): ("b", "b new 0",
                                                                                               {"i": 0})}
    catalog.delete_collection("c")
    assert catalog.hydrate([int(replaced.added_ids[0])]) == {}


def test_a_write_fills_the_rows_of_its_new_chunks_as_duckdb_reads_them(catalog):
    ids = [int(i) for i in catalog.write_documents("c", [_doc("a", 2), _doc("b", 1)], embedder_id="test-8").added_ids]
    assert sorted(catalog._hits.get_many(ids)) == ids, "searches hitting fresh chunks need no statement"
    written = catalog.hydrate(ids)
    catalog._hits.invalidate()
    assert catalog.hydrate(ids) == written == {ids[0]: ("a", "a part 0", {"i": 0}), ids[1]: ("a", "a part 1", {"i": 1}),
                                               ids[2]: ("b", "b part 0", {"i": 0})}
    catalog._hits.invalidate()
    with pytest.raises(duckdb.ConstraintException):  # a write that rolls back fills nothing
        catalog.write_documents("c", [_doc("a", 1, text="new", hash_="h2")], embedder_id="test-8", stored_ids=[])
    assert len(catalog._hits) == 0


def test_the_hit_cache_holds_at_most_its_bound(catalog):
    ids = [int(i) for i in catalog.write_documents("c", [_doc("a", 6)], embedder_id="test-8").added_ids]
    assert len(catalog.hydrate(ids)) == 6
    assert len(catalog._hits) == 4


def test_a_stored_document_left_out_of_stored_ids_fails_and_writes_nothing(catalog):
    catalog.write_documents("c", [_doc("a", 2)], embedder_id="test-8")
    with pytest.raises(duckdb.ConstraintException):
        catalog.write_documents("c", [_doc("a", 1, text="new", hash_="h2")], embedder_id="test-8", stored_ids=[])
    assert catalog.collection_counts("c") == (1, 2) and catalog.document_hashes("c") == {"a": "h"}
    new = catalog.write_documents("c", [_doc("z", 1)], embedder_id="test-8", stored_ids=[])
    assert len(new.removed_ids) == 0 and catalog.collection_counts("c") == (2, 3)
