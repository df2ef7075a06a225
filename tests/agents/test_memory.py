"""MemoryStream on a real duckdb catalog: records survive close/reopen, the index replays what it missed,
retrieval equals scoring every memory when the candidates cover the stream, and access is marked explicitly."""

from __future__ import annotations

import numpy as np
import pytest

from ragsvc.agents.memory import MemoryStream, RetrievalOptions
from ragsvc.agents.scoring import score_candidates, top_k
from ragsvc.errors import InvalidInput
from ragsvc.store.catalog import Catalog

TEXTS = ["ate breakfast at home", "saw a cat on the roof", "Mei invited me to the harvest party at the cafe",
         "watered the plants", "argued with Tomas about the bread price", "read a novel at the library",
         "the harvest party starts at six in the evening", "bought milk"]


def _fill(stream: MemoryStream) -> list[int]:
    ids = []
    for i, text in enumerate(TEXTS):
        ids.append(stream.add("observation", text, at_h=float(i), importance=float(1 + i % 9)).id)
    return ids


def test_records_survive_close_and_reopen(tmp_path, embedder):
    catalog = Catalog(tmp_path / "catalog.duckdb")
    stream = MemoryStream(catalog.memory_tables(), "mei", embedder=embedder, index_dir=tmp_path / "mei")
    ids = _fill(stream)
    insight = stream.add("reflection", "Mei cares about the party", at_h=9.0, evidence=[ids[2], ids[6]],
                         metadata={"depth": 1})
    stream.mark_accessed([ids[0]], at_h=9.5)
    before = stream.get([*ids, insight.id])
    stream.close()
    catalog.close()

    catalog = Catalog(tmp_path / "catalog.duckdb")
    stream = MemoryStream(catalog.memory_tables(), "mei", embedder=embedder, index_dir=tmp_path / "mei")
    assert stream.get([*ids, insight.id]) == before
    assert stream.get([insight.id])[0].evidence == (ids[2], ids[6])
    assert stream.get([ids[0]])[0].last_accessed_h == 9.5
    assert len(stream) == len(TEXTS) + 1
    catalog.close()


def test_index_replays_memories_written_after_its_last_save(tmp_path, embedder):
    catalog = Catalog(tmp_path / "catalog.duckdb")
    stream = MemoryStream(catalog.memory_tables(), "mei", embedder=embedder, index_dir=tmp_path / "mei")
    stream.add("observation", "first", at_h=0.0)
    stream.save()
    late = stream.add("observation", "Mei invited me to the harvest party", at_h=1.0)
    catalog.close()  # a crash: the index never saved the second memory

    catalog = Catalog(tmp_path / "catalog.duckdb")
    stream = MemoryStream(catalog.memory_tables(), "mei", embedder=embedder, index_dir=tmp_path / "mei")
    found = stream.retrieve("harvest party invited", now_h=2.0, options=RetrievalOptions(k=1))
    assert found.memories[0].memory.id == late.id
    catalog.close()


def test_retrieval_equals_scoring_every_memory_when_candidates_cover_the_stream(catalog, embedder):
    stream = MemoryStream(catalog.memory_tables(), "jonah", embedder=embedder)
    ids = _fill(stream)
    stream.mark_accessed([ids[1], ids[4]], at_h=20.0)
    query = "when is the harvest party"
    vectors = embedder.embed_documents(TEXTS)
    memories = stream.get(ids)
    oracle = score_candidates(relevance=vectors @ embedder.embed_query(query),
                              importance=np.array([m.importance for m in memories]),
                              last_accessed_h=np.array([m.last_accessed_h for m in memories]), now_h=30.0)
    expected = [ids[i] for i in top_k(oracle.total, 4)]
    found = stream.retrieve(query, now_h=30.0, options=RetrievalOptions(k=4, mark_accessed=False))
    assert [m.memory.id for m in found.memories] == expected
    assert [m.score for m in found.memories] == pytest.approx(sorted(oracle.total, reverse=True)[:4])
    assert found.num_candidates == len(TEXTS)


def test_retrieval_marks_access_only_when_asked(catalog, embedder):
    stream = MemoryStream(catalog.memory_tables(), "ada", embedder=embedder)
    ids = _fill(stream)
    peek = stream.retrieve("harvest party", now_h=50.0, options=RetrievalOptions(k=2, mark_accessed=False))
    assert all(m.last_accessed_h < 50.0 for m in stream.get(ids))
    used = stream.retrieve("harvest party", now_h=50.0, options=RetrievalOptions(k=2))
    assert [m.memory.id for m in used.memories] == [m.memory.id for m in peek.memories]
    touched = {m.memory.id for m in used.memories}
    assert {m.id for m in stream.get(ids) if m.last_accessed_h == 50.0} == touched
    # the columns retrieval ranks on moved too: the touched memories are now the most recent candidates
    again = stream.retrieve("bought milk", now_h=50.0, options=RetrievalOptions(k=8, mark_accessed=False))
    assert {m.memory.id for m in again.memories if m.recency == 1.0} == touched


def test_a_pending_memory_is_searchable_at_once(catalog, embedder):
    stream = MemoryStream(catalog.memory_tables(), "lena", embedder=embedder)
    _fill(stream)
    fresh = stream.add("observation", "the old mill caught fire", at_h=10.0)
    assert fresh.importance is None
    found = stream.retrieve("old mill fire", now_h=10.0, options=RetrievalOptions(k=1))
    assert found.memories[0].memory.id == fresh.id
    stream.set_importance([fresh.id], [9.0])
    assert stream.get([fresh.id])[0].importance == 9.0


def test_bad_input_is_refused(catalog, embedder):
    stream = MemoryStream(catalog.memory_tables(), "tomas", embedder=embedder)
    ids = _fill(stream)
    other = MemoryStream(catalog.memory_tables(), "mei", embedder=embedder)
    with pytest.raises(InvalidInput, match="not memories of agent 'mei'"):
        other.add("reflection", "Tomas bakes", at_h=1.0, evidence=[ids[0]])
    with pytest.raises(InvalidInput, match="kind"):
        stream.add("dream", "flying", at_h=1.0)
    with pytest.raises(InvalidInput, match="created_h"):
        stream.add("observation", "x", at_h=-1.0)
    with pytest.raises(InvalidInput, match="importance"):
        stream.add("observation", "x", at_h=1.0, importance=11.0)
    with pytest.raises(InvalidInput, match="backwards"):
        stream.retrieve("bread", now_h=2.0)
    with pytest.raises(InvalidInput, match="k must be"):
        RetrievalOptions(k=0)
    assert len(other) == 0 and len(stream) == len(TEXTS)
