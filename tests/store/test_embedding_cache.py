"""The catalog's embedding cache on a real duckdb file: its key filter spares new texts every statement, and
never turns a cached text into a miss or a failed insert; small writes' rows wait in memory and go in
together, and a crash loses only those."""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from ragsvc.index.spec import IndexSpec
from ragsvc.store import embedding_cache, key_filter
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


def _table_rows(catalog: Catalog) -> int:
    return catalog._query("SELECT count(*) FROM embedding_cache")[0][0]


def test_small_writes_wait_in_memory_and_go_in_together(path, monkeypatch):
    monkeypatch.setattr(embedding_cache, "DEFERRED_ROWS", 5)
    catalog = Catalog(path)
    docs = [_doc(f"d{i}", [f"text {i}"], seed=i) for i in range(6)]
    for doc in docs[:4]:
        catalog.write_documents("c", [doc], embedder_id="test-8")
    assert _table_rows(catalog) == 0 and catalog._embedding_cache.num_deferred == 4
    cached = catalog.cached_vectors("test-8", ["hash-of-text 1", "hash-of-text 9"], DIM)
    assert set(cached) == {"hash-of-text 1"}  # waiting rows are found
    np.testing.assert_allclose(cached["hash-of-text 1"], docs[1].chunks[0].vector)
    catalog.write_documents("c", [docs[4]], embedder_id="test-8")  # the fifth tips it over
    assert _table_rows(catalog) == 5 and catalog._embedding_cache.num_deferred == 0
    catalog.write_documents("c", [docs[5]], embedder_id="test-8")
    catalog.close()  # closing writes what still waits
    catalog = Catalog(path)
    hashes = [f"hash-of-text {i}" for i in range(6)]
    assert _table_rows(catalog) == 6 and set(catalog.cached_vectors("test-8", hashes, DIM)) == set(hashes)
    catalog.close()


def test_a_waiting_text_stored_meanwhile_by_a_bulk_write_is_kept_once(path, monkeypatch):
    monkeypatch.setattr(embedding_cache, "DEFERRED_ROWS", 3)
    catalog = Catalog(path)
    catalog.write_documents("c", [_doc("small", ["shared"], seed=1)], embedder_id="test-8")  # waits
    bulk = _doc("bulk", ["shared", *(f"bulk {i}" for i in range(20))], seed=1)
    catalog.write_documents("c", [bulk], embedder_id="test-8")  # inserts "shared" too (conflict-tolerant)
    for i in range(2):  # tip the waiting rows over: their insert must tolerate the stored "shared"
        catalog.write_documents("c", [_doc(f"s{i}", [f"small {i}"], seed=i)], embedder_id="test-8")
    assert catalog._embedding_cache.num_deferred == 0
    assert catalog._query("SELECT count(*) FROM embedding_cache WHERE text_hash = 'hash-of-shared'")[0][0] == 1
    assert _table_rows(catalog) == 23
    catalog.close()


def test_a_crash_loses_only_waiting_cache_rows(path):
    """A real crash: a child process writes and exits without closing. Its documents were committed; the
    cache rows that waited in memory are gone, so those texts are a miss (embedded again), never an error."""
    child = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(Path(__file__).parents[2])!r})
        from tests.store.test_embedding_cache import _doc
        from ragsvc.store.catalog import Catalog
        catalog = Catalog(__import__("pathlib").Path({str(path)!r}))
        for i in range(3):
            catalog.write_documents("c", [_doc(f"d{{i}}", [f"crash {{i}}"], seed=i)], embedder_id="test-8")
        os._exit(0)
    """)
    subprocess.run([sys.executable, "-c", child], check=True, timeout=120)
    catalog = Catalog(path)
    assert catalog.collection_counts("c") == (3, 3)
    assert catalog.cached_vectors("test-8", ["hash-of-crash 0"], DIM) == {}
    catalog.write_documents("c", [_doc("again", ["crash 0"], seed=0)], embedder_id="test-8")
    assert set(catalog.cached_vectors("test-8", ["hash-of-crash 0"], DIM)) == {"hash-of-crash 0"}
    catalog.close()


def test_with_deferral_off_every_write_inserts_its_rows(path):
    catalog = Catalog(path)
    catalog._embedding_cache.deferred_rows = 0
    catalog.write_documents("c", [_doc("a", ["now"])], embedder_id="test-8")
    assert _table_rows(catalog) == 1 and catalog._embedding_cache.num_deferred == 0
    catalog.close()
