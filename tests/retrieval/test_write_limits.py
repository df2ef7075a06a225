"""Bounds on what one ingest batch stores: metadata per document, and text plus metadata per batch, since a
document's metadata is copied into each of its chunks. Pure checks, then the real store refusing before any
embedding or write."""

import pytest

from ragsvc.errors import BatchTooLarge, PayloadTooLarge
from ragsvc.retrieval.bulk_ingest import ingest_pipelined
from ragsvc.retrieval.ingest import split_documents
from ragsvc.retrieval.vector_store import VectorStore
from ragsvc.retrieval.write_limits import (
    WriteLimits,
    check_batch,
    check_metadata,
    metadata_bytes,
    stored_bytes,
)
from ragsvc.types import ChunkInput, DocumentInput


def test_metadata_is_measured_as_compact_utf8_json():
    assert metadata_bytes({}) == 2
    assert metadata_bytes({"a": 1}) == len('{"a":1}')
    assert metadata_bytes({"k": "é"}) == len('{"k":"é"}'.encode())  # two bytes for é, not a \u escape


def test_metadata_past_the_limit_is_refused_naming_the_document_and_the_setting():
    limits = WriteLimits(max_metadata_bytes=100)
    check_metadata([DocumentInput(text="t", metadata={"a": "x" * 90})], limits)  # 98 bytes: fine
    with pytest.raises(PayloadTooLarge, match=r"document 1 has 108 bytes of metadata; the limit is 100 "
                                              r"\(RAGSVC_STORE__MAX_METADATA_BYTES\)"):
        check_metadata([DocumentInput(text="t"), DocumentInput(text="t", metadata={"a": "x" * 100})], limits)
    chunk = ChunkInput("t", 0, 1, {"a": "x" * 100})
    with pytest.raises(PayloadTooLarge, match="document 0's chunk 0 has 108 bytes"):
        check_metadata([DocumentInput(text="t", chunks=[chunk])], limits)


def _split(minilm, docs, tokens=32, overlap=0):
    from ragsvc.index.spec import IndexSpec
    from ragsvc.store.records import CollectionRecord

    record = CollectionRecord("c", "minilm", minilm.dim, IndexSpec(), tokens, overlap)
    return split_documents([(f"d{i}", "h", d) for i, d in enumerate(docs)], embedder=minilm, record=record)


def test_stored_bytes_count_the_metadata_once_per_chunk(minilm):
    text = " ".join(f"word{i}" for i in range(400))
    meta = {"tag": "y" * 1000}
    split = _split(minilm, [DocumentInput(text=text, metadata=meta)])
    num_chunks = len(split[0][3])
    assert num_chunks > 5
    chunk_text = sum(len(c.text) for _, c in split[0][3])
    assert stored_bytes(split) == len(text) + chunk_text + metadata_bytes(meta) * (1 + num_chunks)
    check_batch(split, WriteLimits(max_write_bytes=stored_bytes(split)))
    with pytest.raises(PayloadTooLarge, match=rf"1 document\(s\) cut into {num_chunks} chunk\(s\).*"
                                              r"RAGSVC_STORE__MAX_WRITE_BYTES"):
        check_batch(split, WriteLimits(max_write_bytes=stored_bytes(split) - 1))


def test_a_batch_cut_into_too_many_chunks_is_refused(minilm):
    """A collection of 16-token chunks overlapping by 15 cuts a chunk at nearly every token."""
    text = " ".join(f"word{i}" for i in range(300))
    split = _split(minilm, [DocumentInput(text=text)], tokens=16, overlap=15)
    num_chunks = len(split[0][3])
    assert num_chunks > 300  # about one a token
    check_batch(split, WriteLimits(max_batch_chunks=num_chunks))
    with pytest.raises(BatchTooLarge, match=rf"cut into {num_chunks} chunks .*RAGSVC_STORE__MAX_BATCH_CHUNKS"):
        check_batch(split, WriteLimits(max_batch_chunks=num_chunks - 1))


def test_the_store_refuses_before_embedding_or_writing(tmp_path, minilm, monkeypatch):
    store = VectorStore.open(tmp_path / "data", embedder=minilm,
                             write_limits=WriteLimits(max_metadata_bytes=4096, max_write_bytes=50_000))
    try:
        store.create_collection("c", chunk_tokens=32, chunk_overlap=0)
        embedded: list[int] = []
        real = minilm.embed_documents
        monkeypatch.setattr(minilm, "embed_documents", lambda texts, **kw: (embedded.append(len(texts)),
                                                                            real(texts, **kw))[1])
        with pytest.raises(PayloadTooLarge, match="MAX_METADATA_BYTES"):
            store.add_documents("c", [DocumentInput(text="short", metadata={"a": "x" * 5000})])
        # 4 KB of metadata is allowed once, but not copied into the ~40 chunks of a long text
        long_text = " ".join(f"token{i}" for i in range(1500))
        with pytest.raises(PayloadTooLarge, match="MAX_WRITE_BYTES"):
            store.add_documents("c", [DocumentInput(text=long_text, metadata={"a": "x" * 4000})])
        assert embedded == [] and store.get_collection("c").num_documents == 0
        store.add_documents("c", [DocumentInput(text=long_text, metadata={"a": "small"}, id="ok")])
        assert store.get_collection("c").num_documents == 1
    finally:
        store.close()


def test_a_bulk_batch_too_large_as_a_whole_is_halved_until_it_fits(tmp_path, minilm):
    """Each document fits the write limit, eight together do not: a bulk load stores them all, even with
    on_error="stop", since no document is at fault; one document over the limit alone still fails."""
    store = VectorStore.open(tmp_path / "data", embedder=minilm, write_limits=WriteLimits(max_write_bytes=6_000))
    try:
        store.create_collection("c", chunk_tokens=32, chunk_overlap=0)
        docs = [DocumentInput(text=f"note {i}: " + " ".join(f"w{i}x{j}" for j in range(80)), id=f"d{i}")
                for i in range(8)]
        report = ingest_pipelined(store, "c", [docs], on_error="stop")
        assert report.num_written == 8 and report.failed == ()
        assert store.get_collection("c").num_documents == 8
        huge = DocumentInput(text=" ".join(f"h{j}" for j in range(3000)), id="huge")
        with pytest.raises(PayloadTooLarge, match="MAX_WRITE_BYTES"):
            ingest_pipelined(store, "c", [[huge]], on_error="stop")
    finally:
        store.close()
