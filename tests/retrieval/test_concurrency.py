"""Readers never wait on writers: searches and lookups run while an ingest into the same collection is in
the middle of its catalog transaction or between its commit and its index update (ordering by events)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from ragsvc.retrieval.vector_store import VectorStore
from ragsvc.types import DocumentInput

WAIT_S = 120  # a bound for a broken implementation to fail instead of hanging; never reached when it works


@pytest.fixture()
def store(tmp_path, minilm):
    store = VectorStore.open(tmp_path / "data", embedder=minilm)
    store.create_collection("c")
    store.add_documents("c", [DocumentInput(text=f"Document {i} talks about topic {i % 5}.", id=f"d{i}",
                                            metadata={"topic": i % 5}) for i in range(40)])
    yield store
    store.close()


def _paused_ingest(store: VectorStore, hook_owner: object, hook: str, docs: list[DocumentInput]):
    """Start an ingest that stops inside `hook_owner.hook` until released; returns (paused, release, thread)."""
    paused, release = threading.Event(), threading.Event()
    real = getattr(hook_owner, hook)

    def held(*args, **kwargs):
        out = real(*args, **kwargs)
        paused.set()
        assert release.wait(WAIT_S), "the test never released the writer"
        return out

    setattr(hook_owner, hook, held)
    writer = threading.Thread(target=store.add_documents, args=("c", docs))
    writer.start()
    assert paused.wait(WAIT_S), "the writer reached its pause point"
    return release, writer


def _in_thread(fn) -> tuple[threading.Event, list]:
    done, out = threading.Event(), []

    def run():
        out.append(fn())
        done.set()

    threading.Thread(target=run, daemon=True).start()
    return done, out


def test_reads_complete_while_an_ingest_holds_its_catalog_transaction_open(store):
    new = [DocumentInput(text="A brand new document about volcanoes.", id="new", metadata={"topic": 9})]
    release, writer = _paused_ingest(store, store.catalog._embedding_cache, "insert", new)  # inside BEGIN ... COMMIT
    try:
        done, out = _in_thread(lambda: (store.search("c", query="topic 3", k=3),
                                        store.get_collection("c"), store.get_document("c", "d1"),
                                        store.search("c", query="volcanoes", k=3, filter={"topic": 9})))
        assert done.wait(WAIT_S), "reads finished while the writer was still inside its transaction"
        assert writer.is_alive(), "and the writer was indeed still paused"
    finally:
        release.set()
        writer.join()
    found, info, doc, filtered = out[0]
    assert len(found.hits) == 3 and info.num_documents == 40 and doc["id"] == "d1"
    assert filtered.hits == [], "the uncommitted batch is invisible to readers"
    assert store.search("c", query="volcanoes", k=1).hits[0].document_id == "new"


def test_a_search_between_commit_and_index_update_sees_the_collection_before_the_batch(store):
    new = [DocumentInput(text="Glaciers carve valleys over millennia.", id="ice", metadata={"topic": 7})]
    release, writer = _paused_ingest(store, store.catalog, "write_documents", new)  # committed, not yet applied
    try:
        done, out = _in_thread(lambda: (store.search("c", query="glaciers", k=5, filter={"topic": 7}),
                                        store.search("c", query="glaciers", k=5)))
        assert done.wait(WAIT_S), "searches finished while the acknowledged batch was not yet in the index"
        assert writer.is_alive()
    finally:
        release.set()
        writer.join()
    filtered, plain = out[0]
    assert filtered.hits == [], "the filter admits the committed chunk, the index does not hold it yet: no hit"
    assert "ice" not in {h.document_id for h in plain.hits}
    assert store.search("c", query="glaciers", k=1).hits[0].document_id == "ice"


def test_concurrent_searches_during_ingests_return_what_serial_searches_return(store):
    queries = [f"topic {i % 5} document {i}" for i in range(24)]
    serial = [[h.chunk_id for h in store.search("c", query=q, k=5, filter={"topic": {"$in": [0, 1, 2]}}).hits]
              for q in queries]
    others = [DocumentInput(text=f"Unrelated note {i}.", id=f"x{i}", metadata={"topic": 99}) for i in range(30)]

    def search(q: str) -> list[int]:
        return [h.chunk_id for h in store.search("c", query=q, k=5, filter={"topic": {"$in": [0, 1, 2]}}).hits]

    with ThreadPoolExecutor(8) as pool:
        ingests = [pool.submit(store.add_documents, "c", others[i : i + 3]) for i in range(0, 30, 3)]
        parallel = list(pool.map(search, queries))
        for f in ingests:
            f.result()
    assert parallel == serial, "ingests of other topics never change a filtered search's answer"
    assert store.get_collection("c").num_documents == 70
