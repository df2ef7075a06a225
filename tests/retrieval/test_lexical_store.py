"""The lexical index inside the store: reads its writes, follows deletes and replacements, survives a kill -9
mid-ingest and a corrupted file, and scores exactly as a fresh index over the catalog's chunks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from ragsvc.errors import InvalidInput
from ragsvc.index.lexical_index import LexicalIndex
from ragsvc.retrieval.vector_store import VectorStore
from ragsvc.types import DocumentInput

DOCS = [
    DocumentInput(text="Paged attention stores the KV cache in fixed-size blocks.", id="paged",
                  metadata={"topic": "serving"}),
    DocumentInput(text="HNSW builds a navigable small-world graph for nearest neighbours.", id="hnsw",
                  metadata={"topic": "index"}),
    DocumentInput(text="BM25 ranks documents by term frequency and inverse document frequency.", id="bm25",
                  metadata={"topic": "index"}),
]


@pytest.fixture
def store(tmp_path, minilm):
    s = VectorStore.open(tmp_path / "data", embedder=minilm, save_interval_s=3600)
    s.create_collection("c")
    s.add_documents("c", DOCS)
    yield s
    s.close()


def _fresh_scores(store: VectorStore, query: str, k: int) -> list[tuple[str, float]]:
    """The reference: a new LexicalIndex over exactly the catalog's live chunks."""
    index = LexicalIndex()
    for ids, texts in store.catalog.vector_source("c").iter_texts():
        index.add(ids, texts)
    found = index.search(query, k)
    rows = store.catalog.hydrate([int(i) for i in found.ids])
    return [(rows[int(i)][0], float(s)) for i, s in zip(found.ids, found.scores, strict=True)]


def _scores(store: VectorStore, query: str, k: int = 10) -> list[tuple[str, float]]:
    return [(h.document_id, h.score) for h in store.lexical_search("c", query=query, k=k).hits]


def test_lexical_search_reads_its_writes_and_follows_deletes(store):
    result = store.lexical_search("c", query="graph neighbours", k=3)
    assert [h.document_id for h in result.hits][:1] == ["hnsw"] and str(result.served_by) == "bm25"
    store.add_documents("c", [DocumentInput(text="A graph of symbols ranks a repository map.", id="repo")])
    assert {h.document_id for h in store.lexical_search("c", query="repository symbols", k=3).hits} == {"repo"}
    store.delete_document("c", "hnsw")
    assert "hnsw" not in {h.document_id for h in store.lexical_search("c", query="graph", k=5).hits}
    # a replaced document is found by its new words only
    store.add_documents("c", [DocumentInput(text="BM25 is a bag-of-words ranking function.", id="bm25")])
    assert store.lexical_search("c", query="inverse frequency", k=5).hits == []
    assert _scores(store, "graph ranking BM25 words") == pytest.approx(_fresh_scores(store, "graph ranking BM25 "
                                                                                            "words", 10))


def test_filter_and_bad_input(store):
    hits = store.lexical_search("c", query="graph blocks ranks", k=5, filter={"topic": "serving"}).hits
    assert [h.document_id for h in hits] == ["paged"]
    assert store.lexical_search("c", query="graph", k=5, filter={"topic": "none"}).hits == []
    with pytest.raises(InvalidInput):
        store.lexical_search("c", query="  ", k=5)
    with pytest.raises(InvalidInput):
        store.lexical_search("c", query="graph", k=0)


def test_reopen_catches_up_with_writes_made_after_the_last_save(tmp_path, minilm):
    data = tmp_path / "data"
    store = VectorStore.open(data, embedder=minilm, save_interval_s=3600)
    store.create_collection("c")
    store.add_documents("c", DOCS)
    store.lexical_search("c", query="graph", k=1)
    store.close()  # saves the lexical index
    other = VectorStore.open(data, embedder=minilm, save_interval_s=3600)  # writes while no lexical index open
    other.delete_document("c", "paged")
    other.add_documents("c", [DocumentInput(text="Speculative decoding drafts tokens cheaply.", id="spec")])
    other.catalog.close()  # as if killed: nothing of the lexical index saved since
    again = VectorStore.open(data, embedder=minilm)
    try:
        assert _scores(again, "decoding blocks graph") == pytest.approx(_fresh_scores(again, "decoding blocks graph",
                                                                                      10))
        assert "paged" not in {d for d, _ in _scores(again, "blocks cache")}
    finally:
        again.close()


def test_corrupted_files_are_rebuilt_from_the_catalog(tmp_path, minilm):
    data = tmp_path / "data"
    store = VectorStore.open(data, embedder=minilm)
    store.create_collection("c")
    store.add_documents("c", DOCS)
    expected = _scores(store, "graph blocks")
    store.close()
    files = [p for p in (data / "indexes" / "c" / "lexical").iterdir() if p.is_file()]
    assert files, "the lexical index was saved on close"
    for path in files:
        path.write_bytes(b"\x00garbage" * 8)
    store = VectorStore.open(data, embedder=minilm)
    try:
        assert _scores(store, "graph blocks") == pytest.approx(expected)
    finally:
        store.close()


WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from ragsvc.retrieval.vector_store import VectorStore
    from ragsvc.types import DocumentInput
    store = VectorStore.open(Path(sys.argv[1]), save_interval_s=0.2)
    store.create_collection("c")
    for batch in range(10_000):
        docs = [DocumentInput(text=f"Batch b{batch} item i{i}: lexical words token{batch * 10 + i} here.",
                              id=f"b{batch}-{i}") for i in range(8)]
        store.add_documents("c", docs)
        if batch == 0:
            store.lexical_search("c", query="lexical", k=1)  # open it, so later batches update and save it
        print("ACK", batch, flush=True)
""")


@pytest.mark.slow
def test_sigkill_mid_ingest_loses_no_acknowledged_chunk_lexically(tmp_path, minilm):
    data = tmp_path / "data"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(data)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    acked = []
    try:
        for line in proc.stdout:  # bounded: the writer acknowledges a batch every few hundred ms
            acked.append(int(line.split()[1]))
            if len(acked) >= 6:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    store = VectorStore.open(data, embedder=minilm)
    try:
        for batch in acked:
            hits = store.lexical_search("c", query=f"token{batch * 10 + 3}", k=1).hits
            assert [h.document_id for h in hits] == [f"b{batch}-3"]
        count = store.get_collection("c").num_chunks
        assert len(store.lexical_search("c", query="lexical", k=count + 5).hits) == count
        assert _scores(store, "lexical token12 b1") == pytest.approx(_fresh_scores(store, "lexical token12 b1", 10))
        assert np.array_equal(store._lexical_index("c").live_ids(),
                              store.catalog.vector_source("c").live_ids(up_to=10**12))
    finally:
        store.close()
