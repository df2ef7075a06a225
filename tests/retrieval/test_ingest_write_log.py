"""The write log that lets a commit trust its prepare read, and the store skipping the second read with it."""

import pytest

from ragsvc.retrieval.ingest_write_log import WriteLog
from ragsvc.retrieval.vector_store import VectorStore
from ragsvc.types import DocumentInput


def test_unchanged_until_a_commit_names_one_of_the_ids():
    log = WriteLog()
    seen = log.generation()
    log.record(["a", "b"])
    assert log.unchanged_since(seen, ["c"]) and not log.unchanged_since(seen, ["b", "c"])
    assert log.unchanged_since(log.generation(), ["a"]), "a read after the commit already saw it"


def test_history_past_the_bound_or_before_a_forget_is_unknown():
    log = WriteLog(max_entries=2)
    seen = log.generation()
    log.record(["x"])
    log.record(["y"])
    assert log.unchanged_since(seen, ["z"])
    log.record(["w"])  # the entry for x falls off: what happened after `seen` is no longer known
    assert not log.unchanged_since(seen, ["z"]) and log.unchanged_since(seen + 1, ["z"])
    later = log.generation()
    log.forget()
    assert not log.unchanged_since(later, ["z"]) and log.unchanged_since(log.generation(), ["z"])
    with pytest.raises(ValueError, match="max_entries"):
        WriteLog(max_entries=0)


def _counting_reads(store: VectorStore, monkeypatch) -> list[list[str]]:
    reads: list[list[str]] = []
    real = store.catalog.document_hashes

    def counted(name, ids=None):
        reads.append(list(ids or []))
        return real(name, ids)

    monkeypatch.setattr(store.catalog, "document_hashes", counted)
    return reads


def test_a_commit_reads_again_only_when_another_wrote_its_documents(tmp_path, minilm, monkeypatch):
    store = VectorStore.open(tmp_path / "data", embedder=minilm)
    store.create_collection("c")
    reads = _counting_reads(store, monkeypatch)
    mine = store.prepare_documents("c", [DocumentInput(text="Tides follow the moon.", id="t")])
    other = store.prepare_documents("c", [DocumentInput(text="Rivers carve canyons.", id="r")])
    store.commit(other)
    assert len(reads) == 2, "the other commit trusted its prepare read"
    store.commit(mine)
    assert len(reads) == 2, "a commit of other ids in between changes nothing mine read"
    stale = store.prepare_documents("c", [DocumentInput(text="Tides follow the sun.", id="t")])
    store.add_documents("c", [DocumentInput(text="Tides follow the stars.", id="t")])
    reads.clear()
    store.commit(stale)
    assert reads == [["t"]], "t was replaced after stale's prepare read: the commit reads it again"
    assert store.get_document("c", "t")["text"] == "Tides follow the sun."
    assert store.get_collection("c").num_chunks == 2, "the replaced version's chunk is gone"
    fresh = store.prepare_documents("c", [DocumentInput(text="Comets have tails.", id="n")])  # n: not stored
    store.add_documents("c", [DocumentInput(text="Comets are icy.", id="n")])  # ... until now
    store.commit(fresh)  # trusting the prepare read would insert n twice
    assert store.get_document("c", "n")["text"] == "Comets have tails." and store.get_collection("c").num_chunks == 3
    store.close()
