"""The embedder id names what shapes stored vectors: model, width and document prefix (real MiniLM, real duckdb)."""

from __future__ import annotations

import pytest

from ragsvc.embed.embedder import SentenceTransformerEmbedder, embedder_id
from ragsvc.errors import InvalidInput
from ragsvc.retrieval.vector_store import VectorStore
from ragsvc.types import DocumentInput


def test_no_prefix_keeps_the_plain_id_and_each_prefix_gets_its_own():
    assert embedder_id("minilm", 384) == "minilm-384"  # collections created before prefixes keep their id
    assert embedder_id("minilm", 384, "") == "minilm-384"
    passage, title = embedder_id("minilm", 384, "passage: "), embedder_id("minilm", 384, "title: none | text: ")
    assert passage.startswith("minilm-384-docprefix-") and title.startswith("minilm-384-docprefix-")
    assert passage != title and embedder_id("minilm", 384, "passage: ") == passage  # stable across processes


def test_the_query_prefix_does_not_change_the_id(minilm):
    assert minilm.id == "minilm-384"
    queried = SentenceTransformerEmbedder(query_prefix="query: ")
    assert queried.id == minilm.id


def test_a_changed_document_prefix_is_refused_on_ingest_and_search(tmp_path, minilm):
    docs = [DocumentInput(text="Paged attention keeps the KV cache in blocks.", id="d1")]
    store = VectorStore.open(tmp_path / "data", embedder=minilm)
    store.create_collection("notes")
    store.add_documents("notes", docs)
    store.close()

    prefixed = SentenceTransformerEmbedder(document_prefix="passage: ")
    assert prefixed.id == embedder_id("minilm", 384, "passage: ") != minilm.id
    store = VectorStore.open(tmp_path / "data", embedder=prefixed)
    try:
        with pytest.raises(InvalidInput, match="minilm-384-docprefix-"):
            store.add_documents("notes", [DocumentInput(text="Blocks are allocated on demand.", id="d2")])
        with pytest.raises(InvalidInput, match="built with embedder 'minilm-384'"):
            store.search("notes", query="what keeps the KV cache?", k=1)
        assert store.search("notes", vector=minilm.embed_query("KV cache"), k=5).hits[0].document_id == "d1"
    finally:
        store.close()

    store = VectorStore.open(tmp_path / "data", embedder=minilm)  # the embedder it was built with still works
    try:
        assert [h.document_id for h in store.search("notes", query="what keeps the KV cache?", k=5).hits] == ["d1"]
    finally:
        store.close()


def test_token_counting_matches_the_model_tokenizer_and_ignores_its_padding_state(minilm):
    tokenizer = minilm._model.tokenizer
    texts = ["Plain words, then ünïcödé — 東京.\n\n# A heading\nmore", "long " * 600, "   spaced   out  "]
    expected = [[(int(s), int(e)) for s, e in tokenizer(t, add_special_tokens=False, return_offsets_mapping=True,
                                                        verbose=False)["offset_mapping"]] for t in texts]
    tokenizer(["a", "a longer text"], padding=True, truncation=True, max_length=4)  # as a pass leaves it
    assert [minilm.token_offsets(t) for t in texts] == expected
    assert [minilm.count_tokens(t) for t in texts] == [len(e) for e in expected]
    assert len(expected[1]) == 600  # not truncated to the model's length
