"""The two-step write on the real store: prepare writes nothing and holds no lock; commit is one transaction."""

import threading

import numpy as np
import pytest

from ragsvc.errors import CollectionNotFound, Conflict, InvalidInput
from ragsvc.retrieval.vector_store import VectorStore
from ragsvc.types import DocumentInput


def _docs(prefix: str, n: int) -> list[DocumentInput]:
    return [DocumentInput(text=f"{prefix} note {i}: tides follow the moon on day {i}.", id=f"{prefix}{i}")
            for i in range(n)]


@pytest.fixture()
def store(tmp_path, minilm):
    vs = VectorStore.open(tmp_path / "data", embedder=minilm)
    vs.create_collection("c")
    yield vs
    vs.close()


def test_prepare_writes_nothing_and_commit_acknowledges(store):
    batch = store.prepare_documents("c", _docs("a", 5))
    assert store.get_collection("c").num_documents == 0
    assert batch.ids == tuple(f"a{i}" for i in range(5)) and batch.num_chunks == 5
    assert all(np.isclose(np.linalg.norm(c.vector), 1.0, atol=1e-3) for d in batch.documents for c in d.chunks)
    assert store.commit(batch) == [f"a{i}" for i in range(5)]
    assert store.get_collection("c").num_documents == 5
    assert store.search("c", query="a note 3: tides follow the moon on day 3.", k=1).hits[0].document_id == "a3"


def test_prepare_does_not_wait_for_the_writer_lock(store):
    """A batch prepares (chunks and embeds) while another thread holds the collection's writer lock."""
    done = threading.Event()
    with store._lock("c"):
        worker = threading.Thread(target=lambda: (store.prepare_documents("c", _docs("b", 3)), done.set()))
        worker.start()
        assert done.wait(60), "prepare waited for the writer lock"
    worker.join()


def test_prepare_skips_stored_documents_and_commit_skips_what_was_committed_meanwhile(store):
    store.add_documents("c", _docs("a", 4))
    assert store.prepare_documents("c", _docs("a", 4)).documents == ()
    first = store.prepare_documents("c", _docs("n", 2))
    second = store.prepare_documents("c", _docs("n", 2))  # the same documents, prepared twice
    store.commit(first)
    chunks = store.get_collection("c").num_chunks
    result = store.commit_group([second])
    assert len(result.added_ids) == 0 and len(result.removed_ids) == 0, "identical content is not rewritten"
    assert store.get_collection("c").num_chunks == chunks == 6


def test_commit_group_is_one_transaction_and_the_later_version_wins(store):
    old = store.prepare_documents("c", [DocumentInput(text="Volcanoes erupt lava.", id="x")])
    new = store.prepare_documents("c", [DocumentInput(text="Glaciers carve valleys.", id="x")])
    others = store.prepare_documents("c", _docs("g", 3))
    result = store.commit_group([old, others, new])
    assert len(result.added_ids) == 4
    assert store.get_document("c", "x")["text"] == "Glaciers carve valleys."
    assert store.get_collection("c").num_documents == 4
    assert store.search("c", query="glaciers", k=1).hits[0].document_id == "x"


def test_commit_after_the_collection_changed_is_refused_and_writes_nothing(store, minilm):
    batch = store.prepare_documents("c", _docs("a", 2))
    store.delete_collection("c")
    with pytest.raises(CollectionNotFound):
        store.commit(batch)
    store.create_collection("c", chunk_tokens=64, chunk_overlap=8)  # cut differently from the prepared batch
    with pytest.raises(Conflict, match="send the documents again"):
        store.commit(batch)
    assert store.get_collection("c").num_documents == 0


def test_bad_batch_is_refused_before_any_work(store):
    with pytest.raises(InvalidInput, match="appears twice"):
        store.prepare_documents("c", [DocumentInput(text="a", id="same"), DocumentInput(text="b", id="same")])
    with pytest.raises(ValueError, match="one collection"):
        store.commit_group([])


def test_concurrent_small_ingests_all_land_in_fewer_transactions(store):
    """Eight threads each ingest their own small batch at once: every document lands exactly once."""
    store.add_documents("c", _docs("warm", 1))  # index open, model loaded
    errors: list[BaseException] = []

    def ingest(t: int) -> None:
        try:
            store.add_documents("c", _docs(f"t{t}-", 3))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=ingest, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    info = store.get_collection("c")
    assert info.num_documents == info.num_chunks == 1 + 8 * 3
    assert len(store.search("c", query="tides", k=100).hits) == 25
