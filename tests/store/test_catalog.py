"""The duckdb catalog: transactions, replacement, deletes, the vector source and the embedding cache."""

import subprocess
import sys

import numpy as np
import pytest

from ragsvc.errors import CollectionExists, CollectionNotFound, Conflict, DocumentNotFound, InvalidInput
from ragsvc.index.spec import IndexSpec
from ragsvc.store.catalog import Catalog
from ragsvc.store.records import CollectionRecord, PreparedChunk, PreparedDocument

DIM = 8


@pytest.fixture()
def catalog(tmp_path):
    cat = Catalog(tmp_path / "catalog.duckdb")
    cat.create_collection(CollectionRecord("c", "test-8", DIM, IndexSpec(), 64, 8))
    yield cat
    cat.close()


def _doc(doc_id: str, n_chunks: int, seed: int = 0, hash_: str = "h") -> PreparedDocument:
    rng = np.random.default_rng(seed)
    chunks = [PreparedChunk(f"{doc_id} part {i}", i * 10, i * 10 + 9, {"i": i}, f"{doc_id}-{i}-{seed}",
                            rng.standard_normal(DIM).astype(np.float32)) for i in range(n_chunks)]
    return PreparedDocument(doc_id, None, hash_, {"doc": doc_id}, f"text of {doc_id}", chunks)


def test_collections_lifecycle(catalog):
    with pytest.raises(CollectionExists):
        catalog.create_collection(CollectionRecord("c", "x", 4, IndexSpec(), 64, 8))
    # one index folder on a case-insensitive file system (macOS, Windows): refused on every system alike
    with pytest.raises(CollectionExists, match="'C' differs from it only in case"):
        catalog.create_collection(CollectionRecord("C", "x", 4, IndexSpec(), 64, 8))
    assert [c.name for c in catalog.list_collections()] == ["c"]
    assert catalog.get_collection("c").index == IndexSpec()
    catalog.delete_collection("c")
    with pytest.raises(CollectionNotFound):
        catalog.get_collection("c")


def test_write_then_read_back_vectors_in_id_order(catalog):
    docs = [_doc("a", 3, seed=1), _doc("b", 2, seed=2)]
    result = catalog.write_documents("c", docs, embedder_id="test-8")
    assert len(result.added_ids) == 5 and list(result.added_ids) == sorted(result.added_ids)
    source = catalog.vector_source("c")
    got = list(source.iter_vectors(batch_size=2))
    ids = np.concatenate([i for i, _ in got])
    vectors = np.concatenate([v for _, v in got])
    np.testing.assert_array_equal(ids, result.added_ids)
    np.testing.assert_allclose(vectors, result.added_vectors)
    assert source.max_chunk_id() == int(ids[-1]) and source.count() == 5
    np.testing.assert_allclose(source.vectors_for(ids[::-1]), vectors[::-1])
    assert [len(i) for i, _ in source.iter_vectors(after_id=int(ids[2]))] == [2]


def test_replacing_a_document_removes_its_old_chunks(catalog):
    first = catalog.write_documents("c", [_doc("a", 3)], embedder_id="test-8")
    second = catalog.write_documents("c", [_doc("a", 1, seed=5, hash_="h2")], embedder_id="test-8")
    assert sorted(second.removed_ids) == sorted(first.added_ids)
    assert catalog.collection_counts("c") == (1, 1)
    assert catalog.document_hashes("c") == {"a": "h2"}
    assert min(second.added_ids) > max(first.added_ids), "chunk ids only grow, so watermarks stay valid"


def test_delete_document_and_errors(catalog):
    added = catalog.write_documents("c", [_doc("a", 2), _doc("b", 1)], embedder_id="test-8").added_ids
    removed = catalog.delete_document("c", "a")
    assert sorted(removed) == sorted(added[:2])
    assert [d["id"] for d in catalog.list_documents("c", limit=10, offset=0)] == ["b"]
    with pytest.raises(DocumentNotFound):
        catalog.delete_document("c", "a")
    with pytest.raises(DocumentNotFound):
        catalog.get_document("c", "a")


def test_failed_transaction_writes_nothing(catalog):
    before = catalog.write_documents("c", [_doc("a", 2)], embedder_id="test-8").added_ids
    # The same id twice fails on the documents' primary key after a's old chunks were already deleted
    # inside the transaction: the rollback must bring them back.
    with pytest.raises(Exception, match="(?i)constraint|duplicate"):
        catalog.write_documents("c", [_doc("a", 1, hash_="h2"), _doc("a", 1, hash_="h3")], embedder_id="test-8")
    assert catalog.collection_counts("c") == (1, 2)
    assert catalog.document_hashes("c") == {"a": "h"}
    assert sorted(catalog.hydrate([int(i) for i in before])) == sorted(int(i) for i in before)


def test_embedding_cache_round_trip(catalog):
    doc = _doc("a", 2)
    catalog.write_documents("c", [doc], embedder_id="test-8")
    cached = catalog.cached_vectors("test-8", [c.text_hash for c in doc.chunks] + ["unknown"], DIM)
    assert set(cached) == {c.text_hash for c in doc.chunks}
    np.testing.assert_allclose(cached[doc.chunks[1].text_hash], doc.chunks[1].vector)
    assert catalog.cached_vectors("other-model", [doc.chunks[0].text_hash], DIM) == {}


def test_hydrate_and_filter(catalog):
    ids = catalog.write_documents("c", [_doc("a", 3)], embedder_id="test-8").added_ids
    rows = catalog.hydrate([int(i) for i in ids] + [999999])
    assert set(rows) == {int(i) for i in ids}
    assert rows[int(ids[1])] == ("a", "a part 1", {"i": 1})
    assert list(catalog.filter_chunk_ids("c", {"i": {"$gte": 1}})) == list(ids[1:])


def test_a_catalog_held_by_another_process_is_a_conflict(tmp_path):
    path = tmp_path / "catalog.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb, sys; c = duckdb.connect({str(path)!r}); print('ready', flush=True); "
                               "sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(Conflict, match="holds it"):
            Catalog(path)
    finally:
        holder.communicate("", timeout=30)


def test_a_file_that_is_not_a_catalog_is_invalid_input(tmp_path):
    path = tmp_path / "catalog.duckdb"
    path.write_bytes(b"not a database" * 512)
    with pytest.raises(InvalidInput, match="RAGSVC_STORE__DATA_DIR"):
        Catalog(path)


def test_a_data_dir_that_is_a_file_is_refused_with_what_to_do(tmp_path):
    (tmp_path / "data").write_text("not a folder")
    with pytest.raises(InvalidInput, match=r"data directory: it is a file, not a folder\. Point .*--data-dir"):
        Catalog(tmp_path / "data" / "catalog.duckdb")
