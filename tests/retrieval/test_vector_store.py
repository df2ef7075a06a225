"""VectorStore end to end on the real duckdb, real MiniLM and real indexes."""

import numpy as np
import pytest

from ragsvc.errors import CollectionExists, CollectionNotFound, DimensionMismatch, DocumentNotFound, InvalidInput
from ragsvc.index.spec import IndexSpec
from ragsvc.retrieval.vector_store import VectorStore
from ragsvc.types import ChunkInput, DocumentInput

TOPICS = ["paged attention keeps the KV cache in fixed-size blocks",
          "HNSW graphs answer nearest neighbour queries quickly",
          "duckdb stores tables in a single file with transactions",
          "tree-sitter parses source code into syntax trees",
          "BM25 ranks documents by term frequency and rarity",
          "reflection lets agents summarise their memories"]


def _docs(n: int = 24) -> list[DocumentInput]:
    return [DocumentInput(text=f"Note {i}: {TOPICS[i % len(TOPICS)]}. Written on day {i}.", id=f"d{i}",
                          metadata={"day": i, "topic": i % len(TOPICS)}) for i in range(n)]


@pytest.fixture()
def store(tmp_path, minilm):
    vs = VectorStore.open(tmp_path / "data", embedder=minilm)
    vs.create_collection("notes")
    vs.add_documents("notes", _docs())
    yield vs
    vs.close()


def test_search_by_text_finds_the_topic(store):
    result = store.search("notes", query="which database keeps tables in one file?", k=4)
    assert len(result.hits) == 4
    assert all(h.metadata["topic"] == 2 for h in result.hits)
    assert result.hits[0].score >= result.hits[-1].score
    assert {"embed_ms", "hydrate_ms", "total_ms"} <= set(result.timings_ms)
    assert result.served_by.path == "ann" and str(result.served_by) == "hnsw[1 shard(s), d=384]"


def test_filters_and_k_larger_than_collection(store):
    hits = store.search("notes", query="syntax trees", k=100, filter={"day": {"$gte": 20}}).hits
    assert sorted(h.document_id for h in hits) == ["d20", "d21", "d22", "d23"]
    assert len(store.search("notes", query="anything", k=1000).hits) == 24
    nothing = store.search("notes", query="x", k=5, filter={"topic": 99})
    assert nothing.hits == [] and nothing.served_by.path == "empty_filter" and str(nothing.served_by) == "filter"
    few = store.search("notes", query="x", k=5, filter={"topic": 1}).served_by
    assert str(few) == "exact-subset(4 ids, full width)" and few.num_ids == 4


def test_reingest_identical_is_noop_and_changed_replaces(store):
    before = store.get_collection("notes")
    store.add_documents("notes", _docs())
    assert store.get_collection("notes").num_chunks == before.num_chunks
    store.add_documents("notes", [DocumentInput(text="Completely new words about volcanoes.", id="d0")])
    assert store.get_collection("notes").num_documents == 24
    hit = store.search("notes", query="volcanoes", k=1).hits[0]
    assert hit.document_id == "d0" and "volcanoes" in hit.text


def test_creating_an_existing_collection_leaves_it_intact(store):
    store.flush()
    files = sorted(p.name for p in (store.data_dir / "indexes" / "notes").rglob("*") if p.is_file())
    with pytest.raises(CollectionExists):
        store.create_collection("notes")
    assert sorted(p.name for p in (store.data_dir / "indexes" / "notes").rglob("*") if p.is_file()) == files
    assert store.get_collection("notes").num_documents == 24


def test_delete_document_leaves_search(store):
    store.delete_document("notes", "d2")
    assert "d2" not in {h.document_id for h in store.search("notes", query="duckdb file", k=30).hits}
    with pytest.raises(DocumentNotFound):
        store.get_document("notes", "d2")


def test_persist_reopen_gives_identical_results(tmp_path, minilm):
    vs = VectorStore.open(tmp_path / "data", embedder=minilm)
    vs.create_collection("notes", index=IndexSpec(num_shards=2))
    vs.add_documents("notes", _docs())
    before = vs.search("notes", query="nearest neighbour graphs", k=8)
    vs.close()
    again = VectorStore.open(tmp_path / "data", embedder=minilm)
    after = again.search("notes", query="nearest neighbour graphs", k=8)
    assert [h.chunk_id for h in after.hits] == [h.chunk_id for h in before.hits]
    np.testing.assert_allclose([h.score for h in after.hits], [h.score for h in before.hits], rtol=1e-5)
    again.close()


def test_corrupted_index_files_are_rebuilt(tmp_path, minilm):
    vs = VectorStore.open(tmp_path / "data", embedder=minilm)
    vs.create_collection("notes")
    vs.add_documents("notes", _docs())
    expected = [h.chunk_id for h in vs.search("notes", query="agents and memories", k=5).hits]
    vs.close()
    files = [p for p in (tmp_path / "data" / "indexes" / "notes").rglob("*") if p.is_file()]
    assert files, "the index wrote files"
    for path in files:
        path.write_bytes(b"garbage" * 10)
    again = VectorStore.open(tmp_path / "data", embedder=minilm)
    assert [h.chunk_id for h in again.search("notes", query="agents and memories", k=5).hits] == expected
    again.close()


def test_caller_chunks_are_stored_as_given(store):
    text = "def retry(): pass\n\ndef backoff(): pass\n"
    store.add_documents("notes", [DocumentInput(text=text, id="code.py", chunks=[
        ChunkInput(text[0:17], 0, 17, {"symbol": "retry"}), ChunkInput(text[19:38], 19, 38, {"symbol": "backoff"})])])
    hits = store.search("notes", query="backoff", k=3, filter={"symbol": "backoff"}).hits
    assert [h.text for h in hits] == ["def backoff(): pass"]


def test_bad_input_is_refused_and_writes_nothing(store, minilm):
    before = store.get_collection("notes")
    with pytest.raises(InvalidInput, match="empty text"):
        store.add_documents("notes", [DocumentInput(text="fine", id="ok"), DocumentInput(text="   ")])
    with pytest.raises(InvalidInput, match="twice"):
        store.add_documents("notes", [DocumentInput(text="a", id="x"), DocumentInput(text="b", id="x")])
    with pytest.raises(DimensionMismatch):
        store.search("notes", vector=np.ones(17), k=3)
    with pytest.raises(InvalidInput, match="NaN"):
        store.search("notes", vector=np.full(minilm.dim, np.nan), k=3)
    with pytest.raises(InvalidInput, match="exactly one"):
        store.search("notes", k=3)
    with pytest.raises(InvalidInput, match="unknown filter operator"):
        store.search("notes", query="x", filter={"day": {"$near": 3}})
    with pytest.raises(CollectionNotFound):
        store.search("nope", query="x")
    assert store.get_collection("notes") == before


@pytest.mark.parametrize("backend", ["exact", "faiss_flat", "faiss_hnsw"])
def test_other_backends_agree_with_exact_on_small_data(tmp_path, minilm, backend):
    vs = VectorStore.open(tmp_path / backend, embedder=minilm)
    vs.create_collection("n", index=IndexSpec(backend=backend))
    vs.add_documents("n", _docs())
    hits = vs.search("n", query="tables in a single file", k=4).hits
    assert all(h.metadata["topic"] == 2 for h in hits)
    vs.close()
