"""The pipelined bulk writer on the real store: order, grouping, errors, resume, and kill -9 mid-run."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from ragsvc.errors import InvalidInput
from ragsvc.retrieval.bulk_ingest import batch_entries, ingest_pipelined
from ragsvc.retrieval.vector_store import VectorStore
from ragsvc.store.files import Unreadable
from ragsvc.types import DocumentInput


def _batch(b: int, n: int = 4) -> list[DocumentInput]:
    return [DocumentInput(text=f"Batch {b} item {i}: the number {b * 10 + i} is written in words here.",
                          id=f"b{b}-{i}", metadata={"batch": b}) for i in range(n)]


@pytest.fixture()
def store(tmp_path, minilm):
    vs = VectorStore.open(tmp_path / "data", embedder=minilm)
    vs.create_collection("c")
    yield vs
    vs.close()


def test_every_batch_is_committed_and_acknowledged_in_order(store):
    acks = []
    report = ingest_pipelined(store, "c", (_batch(b) for b in range(6)), on_commit=acks.append)
    assert report.num_documents == report.num_written == report.num_chunks == 24
    assert 1 <= report.num_commits <= 6 and len(acks) == 6 and all(a.num_documents == 4 for a in acks)
    info = store.get_collection("c")
    assert info.num_documents == info.num_chunks == 24
    assert store.search("c", query="Batch 5 item 2: the number 52 is written in words here.", k=1,
                        filter={"batch": 5}).hits[0].document_id == "b5-2"


def test_a_second_run_writes_nothing_and_costs_no_transaction(store):
    ingest_pipelined(store, "c", (_batch(b) for b in range(3)))
    again = ingest_pipelined(store, "c", (_batch(b) for b in range(3)))
    assert again.num_documents == 12 and again.num_written == 0 and again.num_commits == 0


def test_a_bad_batch_is_skipped_and_reported_or_stops_the_load(store):
    bad = [DocumentInput(text="   ", id="empty")]
    failures = []
    report = ingest_pipelined(store, "c", [_batch(0), bad, _batch(1)], on_error="skip", on_failure=failures.append)
    assert report.num_documents == 8 and len(report.failed) == 1 == len(failures)
    assert report.failed[0].document_ids == ("empty",) and "empty text" in report.failed[0].reason
    with pytest.raises(InvalidInput, match="empty text"):
        ingest_pipelined(store, "c", [_batch(2), bad, _batch(3)], on_error="stop")
    ids = {d["id"] for d in store.list_documents("c", limit=100)}
    assert "b2-0" in ids, "what was prepared before the bad batch is committed"
    assert "b3-0" not in ids and "empty" not in ids


def test_a_failing_source_stops_the_load_after_committing_what_came_before(store):
    def batches():
        yield _batch(0)
        raise OSError("disk read failed")

    with pytest.raises(OSError, match="disk read failed"):
        ingest_pipelined(store, "c", batches(), on_error="skip")  # not a user error: never skipped
    assert store.get_collection("c").num_documents == 4


def test_bounds_are_checked(store):
    with pytest.raises(ValueError, match="queue_depth"):
        ingest_pipelined(store, "c", [], queue_depth=0)
    with pytest.raises(ValueError, match="max_group"):
        ingest_pipelined(store, "c", [], max_group=0)


WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from ragsvc.retrieval.bulk_ingest import ingest_pipelined
    from ragsvc.retrieval.vector_store import VectorStore
    from ragsvc.types import DocumentInput
    store = VectorStore.open(Path(sys.argv[1]), save_interval_s=0.2)
    store.create_collection("c")
    batches = ([DocumentInput(text=f"Batch {b} item {i}: the number {b * 10 + i} is written in words here.",
                              id=f"b{b}-{i}", metadata={"batch": b}) for i in range(8)] for b in range(100_000))
    done = [0]
    def ack(a):
        done[0] += a.num_documents
        print("ACK", done[0], flush=True)
    ingest_pipelined(store, "c", batches, on_commit=ack)
""")


@pytest.mark.slow
def test_sigkill_mid_pipelined_ingest_then_resume(tmp_path, minilm):
    data = tmp_path / "data"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(data)], stdout=subprocess.PIPE, text=True, env=env)
    acked = 0
    try:
        for number, line in enumerate(proc.stdout, start=1):  # bounded: a batch is acknowledged every ~100 ms
            acked = int(line.split()[1])
            if number >= 6:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert acked >= 6 * 8, "the writer acknowledged batches before being killed"

    store = VectorStore.open(data, embedder=minilm)
    try:
        info = store.get_collection("c")
        assert info.num_documents % 8 == 0, "batches are all-or-nothing, grouped or not"
        assert info.num_documents >= acked
        assert info.num_chunks == info.num_documents, "each short document is one chunk, none half-written"
        survived = info.num_documents
        # resume: the same load again, a little further; acknowledged documents are not written twice
        total_batches = survived // 8 + 5
        batches = ([DocumentInput(text=f"Batch {b} item {i}: the number {b * 10 + i} is written in words here.",
                                  id=f"b{b}-{i}", metadata={"batch": b}) for i in range(8)]
                   for b in range(total_batches))
        report = ingest_pipelined(store, "c", batches)
        assert report.num_documents == 8 * total_batches
        assert report.num_written == 8 * total_batches - survived
        info = store.get_collection("c")
        assert info.num_documents == info.num_chunks == 8 * total_batches
        ids = [d["id"] for d in store.list_documents("c", limit=10_000)]
        assert len(ids) == len(set(ids)) == 8 * total_batches
        assert len(store.search("c", query="number", k=info.num_chunks).hits) == info.num_chunks
    finally:
        store.close()


def test_skip_isolates_the_bad_document_of_a_batch(store):
    batch = [*_batch(0, 3), DocumentInput(text="   ", id="blank"), *_batch(1, 2)]
    report = ingest_pipelined(store, "c", [batch], on_error="skip")
    assert report.num_documents == 5 and [f.document_ids for f in report.failed] == [("blank",)]
    assert store.get_collection("c").num_documents == 5


def test_batch_entries_cuts_batches_names_bad_entries_and_splits_at_a_repeated_id():
    docs = [DocumentInput(text=f"t{i}", id=f"d{i}") for i in range(5)]
    bad = Unreadable("x.jsonl:3", "invalid JSON")
    skipped: list[Unreadable] = []
    entries = [docs[0], docs[1], bad, docs[2], DocumentInput(text="again", id="d2"), docs[3], docs[4]]
    batches = list(batch_entries(entries, batch_size=2, on_error="skip", on_skip=skipped.append))
    assert [[d.id for d in b] for b in batches] == [["d0", "d1"], ["d2"], ["d2", "d3"], ["d4"]]
    assert skipped == [bad]
    with pytest.raises(InvalidInput, match=r"x.jsonl:3: invalid JSON \(pass --on-error skip"):
        list(batch_entries(entries, batch_size=2, on_error="stop", on_skip=skipped.append))
    with pytest.raises(ValueError, match="batch_size"):
        list(batch_entries([], batch_size=0, on_error="stop", on_skip=skipped.append))


def test_each_batch_reaches_the_model_in_one_call_of_all_its_new_chunks(store, minilm, monkeypatch):
    """A bulk load sorts a whole batch by token count in one embedder call, not the store's 64-text slices."""
    calls: list[int] = []
    real = minilm.embed_documents

    def counted(texts, **kwargs):
        calls.append(len(texts))
        return real(texts, **kwargs)

    monkeypatch.setattr(minilm, "embed_documents", counted)
    big = [DocumentInput(text=f"Document {i} talks about topic {i % 7} at some length.", id=f"d{i}")
           for i in range(150)]
    ingest_pipelined(store, "c", [big[:100], big[100:]])
    assert calls == [100, 50]
    ingest_pipelined(store, "c", [big[:100] + [DocumentInput(text="One new text.", id="new")]])
    assert calls == [100, 50, 1], "stored documents are skipped before the model"
