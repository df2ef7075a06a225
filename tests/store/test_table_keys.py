"""Which of a batch's documents are stored: the catalog answers new ids from its key filter, stored ones from
duckdb, and stays exact across reopen, replacement, deletion and a rolled-back write."""

import numpy as np
import pytest

from ragsvc.index.spec import IndexSpec
from ragsvc.store.catalog import Catalog
from ragsvc.store.records import CollectionRecord, PreparedChunk, PreparedDocument

DIM = 4


def _doc(doc_id: str, content: str = "v1") -> PreparedDocument:
    chunk = PreparedChunk(f"{doc_id} text", 0, 7, {}, f"h-{doc_id}-{content}", np.ones(DIM, np.float32) / 2)
    return PreparedDocument(doc_id, None, content, {}, f"{doc_id} text", [chunk])


@pytest.fixture()
def catalog(tmp_path):
    cat = Catalog(tmp_path / "catalog.duckdb")
    for name in ("c", "d"):
        cat.create_collection(CollectionRecord(name, "test-4", DIM, IndexSpec(), 64, 8))
    yield cat
    cat.close()


def test_new_ids_need_no_statement_and_stored_ones_are_read(catalog, monkeypatch):
    catalog.write_documents("c", [_doc("a"), _doc("b")], embedder_id="test-4")
    reads = []
    real = catalog._read
    monkeypatch.setattr(catalog, "_read", lambda sql, params=None: (reads.append(sql), real(sql, params))[1])
    assert catalog.document_hashes("c", ["x", "y"]) == {} and reads == []
    assert catalog.document_hashes("d", ["a"]) == {} and reads == [], "keys are per collection"
    assert catalog.document_hashes("c", ["a", "x"]) == {"a": "v1"} and len(reads) == 1
    assert catalog.document_hashes("c") == {"a": "v1", "b": "v1"}, "the whole collection is still read"


def test_answers_stay_exact_across_replace_delete_rollback_and_reopen(tmp_path, catalog):
    catalog.write_documents("c", [_doc("a")], embedder_id="test-4")
    catalog.write_documents("c", [_doc("a", "v2")], embedder_id="test-4", stored_ids=["a"])
    assert catalog.document_hashes("c", ["a"]) == {"a": "v2"}
    catalog.delete_document("c", "a")
    assert catalog.document_hashes("c", ["a"]) == {}, "a deleted id is read (perhaps present) and found gone"
    with pytest.raises(Exception, match="(?i)constraint|duplicate"):
        catalog.write_documents("c", [_doc("z"), _doc("z", "v2")], embedder_id="test-4")
    assert catalog.document_hashes("c", ["z"]) == {}
    catalog.write_documents("c", [_doc("z")], embedder_id="test-4")
    catalog.close()
    reopened = Catalog(tmp_path / "catalog.duckdb")  # the filter is built again from the table
    assert reopened.document_hashes("c", ["z", "q"]) == {"z": "v1"}
    reopened.close()
