"""The catalog's embedding cache on a real duckdb file: its key filter spares new texts every statement, and
never turns a cached text into a miss or a failed insert."""

import numpy as np
import pytest

from ragsvc.index.spec import IndexSpec
from ragsvc.store import key_filter
from ragsvc.store.catalog import Catalog
from ragsvc.store.records import CollectionRecord, PreparedChunk, PreparedDocument

DIM = 8


def _doc(doc_id: str, texts: list[str], seed: int = 0) -> PreparedDocument:
    rng = np.random.default_rng(seed)
    chunks = [PreparedChunk(t, 0, len(t), {}, f"hash-of-{t}", rng.standard_normal(DIM).astype(np.float32))
              for t in texts]
    return PreparedDocument(doc_id, None, f"content-{doc_id}-{seed}", {}, " ".join(texts), chunks)


@pytest.fixture()
def path(tmp_path):
    cat = Catalog(tmp_path / "catalog.duckdb")
    cat.create_collection(CollectionRecord("c", "test-8", DIM, IndexSpec(), 64, 8))
    cat.close()
    return tmp_path / "catalog.duckdb"


def test_a_text_never_cached_is_a_miss_without_a_statement(path, monkeypatch):
    catalog = Catalog(path)
    catalog.write_documents("c", [_doc("a", ["one", "two"])], embedder_id="test-8")

    def no_statement():
        raise AssertionError("a lookup of new texts asked duckdb")

    monkeypatch.setattr(catalog._embedding_cache, "_reader", no_statement)
    assert catalog.cached_vectors("test-8", ["hash-of-three", "hash-of-four"], DIM) == {}
    assert catalog.cached_vectors("other-8", ["hash-of-one"], DIM) == {}, "keys are per embedder"
    catalog.close()


def test_cached_texts_survive_reopen_repeats_and_rewrites(path):
    catalog = Catalog(path)
    first = _doc("a", ["one", "two", "one"], seed=1)  # a text twice in one batch is cached once
    catalog.write_documents("c", [first], embedder_id="test-8")
    catalog.close()
    catalog = Catalog(path)  # the filter is rebuilt from the table
    cached = catalog.cached_vectors("test-8", ["hash-of-one", "hash-of-two", "hash-of-nine"], DIM)
    assert set(cached) == {"hash-of-one", "hash-of-two"}
    np.testing.assert_allclose(cached["hash-of-one"], first.chunks[0].vector)
    catalog.write_documents("c", [_doc("b", ["two", "three"], seed=2)], embedder_id="test-8")  # "two" again: kept
    again = catalog.cached_vectors("test-8", ["hash-of-two", "hash-of-three"], DIM)
    np.testing.assert_allclose(again["hash-of-two"], first.chunks[1].vector)
    assert set(again) == {"hash-of-two", "hash-of-three"}
    catalog.close()


def test_a_rolled_back_insert_leaves_a_key_that_only_costs_a_lookup(path):
    catalog = Catalog(path)
    with pytest.raises(Exception, match="(?i)constraint|duplicate"):  # the same id twice: the batch rolls back
        catalog.write_documents("c", [_doc("a", ["lost"]), _doc("a", ["lost too"])], embedder_id="test-8")
    assert catalog.cached_vectors("test-8", ["hash-of-lost"], DIM) == {}, "the filter says perhaps; the table no"
    catalog.write_documents("c", [_doc("a", ["lost"], seed=3)], embedder_id="test-8")  # conflict-tolerant insert
    assert set(catalog.cached_vectors("test-8", ["hash-of-lost"], DIM)) == {"hash-of-lost"}
    catalog.close()


def test_the_filter_grows_and_bulk_and_small_writes_agree(path, monkeypatch):
    monkeypatch.setattr(key_filter, "MIN_BITS", 64)  # capacity 6: the writes below outgrow it several times
    catalog = Catalog(path)
    small = [_doc(f"s{i}", [f"small {i}"], seed=i) for i in range(3)]  # VALUES statements
    bulk = _doc("bulk", [f"bulk {i}" for i in range(40)], seed=9)  # Arrow tables
    catalog.write_documents("c", small, embedder_id="test-8")
    result = catalog.write_documents("c", [bulk], embedder_id="test-8")
    assert catalog._embedding_cache._keys._filter.num_bits > 64
    hashes = [c.text_hash for d in [*small, bulk] for c in d.chunks]
    cached = catalog.cached_vectors("test-8", hashes, DIM)
    assert set(cached) == set(hashes)
    np.testing.assert_allclose(cached["hash-of-bulk 7"], bulk.chunks[7].vector)
    assert list(result.added_ids) == sorted(result.added_ids) and len(result.added_ids) == 40
    np.testing.assert_allclose(catalog.vector_source("c").vectors_for(result.added_ids), result.added_vectors)
    catalog.close()
