"""MemoryStream: one agent's memories (observations, reflections, plans, chat) in the catalog, with their
embeddings in a derived vector index, and retrieval by recency x importance x relevance (agents/scoring.py).

Storage. Records and vectors are written to duckdb in one transaction (store/memories.py); only then is the
agent's index updated, so a memory is searchable as soon as `add` returns, before its importance is scored
(pending importance is scored later by agents/importance.py, and is neutral in retrieval meanwhile). The
index is a CollectionIndex, the same structure collections use, over this agent's vectors alone: on open it
loads its files and replays memories above its watermark, or rebuilds from the catalog when they are missing.

One index per agent, rather than one shared index filtered by agent: `ragsvc.agents.memory_bench` measured both
at 100k memories for one agent (the shared index has to pass the agent's 100k ids as a filter on every query;
see eval/baselines/agents-memory.md).

Candidates. Scoring every memory needs every memory's relevance, i.e. a full scan of 100k vectors a query.
Instead the candidates are the union of the `relevant` nearest memories (the ANN index) and the `prior` memories
best by recency and importance together (the score without relevance, computed over all memories from
MemoryColumns, an in-memory copy of those two columns: O(n) numpy, ~2 ms at 100k); the latter's relevance is
scored exactly over just their ids, and the three terms are min-max normalised over this union, as the issue
defines them. This approximates scoring every memory: a memory fairly close and fairly recent/important, but
top in neither list, can be missed.
eval/baselines/agents-memory.md measures how often at 100k memories; raise the three counts to trade latency
for agreement.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ragsvc.agents.memory_columns import MemoryColumns
from ragsvc.agents.scoring import PAPER_WEIGHTS, RetrievalWeights, check_clock, score_candidates, top_k
from ragsvc.embed.embedder import Embedder
from ragsvc.errors import InvalidInput
from ragsvc.index.collection_index import CollectionIndex
from ragsvc.index.spec import IndexSpec
from ragsvc.index.unit_vectors import NotNormalisable, unit_rows, unit_vector
from ragsvc.store.memories import MemoryKind, MemoryRecord, MemoryTables, NewMemory

T = TypeVar("T")

MEMORY_INDEX_SPEC = IndexSpec(backend="hnsw", metric="cosine", ef_search=64)
"""hnsw at full width: memories arrive one at a time, and hnsw needs no training, so the first memory is served
by the same structure as the hundred-thousandth."""


@dataclass(frozen=True, slots=True)
class RetrievalOptions:
    """How many memories to return and how the candidates are gathered."""

    k: int = 10
    weights: RetrievalWeights = PAPER_WEIGHTS
    relevant: int = 100
    """Nearest memories by embedding taken as candidates."""
    prior: int = 200
    """Memories best by recency and importance together taken as candidates (see the module docstring)."""
    mark_accessed: bool = True
    """Move the returned memories' last access to `now_h` (the paper's behaviour); off for inspection."""

    def __post_init__(self) -> None:
        if self.k < 1:
            raise InvalidInput(f"k must be at least 1, got {self.k}")
        for name in ("relevant", "prior"):
            if not 0 <= getattr(self, name) <= 2000:
                raise InvalidInput(f"{name} candidates must be in [0, 2000], got {getattr(self, name)}")
        if self.relevant + self.prior == 0:
            raise InvalidInput("no candidates: set relevant or prior above 0")


@dataclass(frozen=True, slots=True)
class RetrievedMemory:
    memory: MemoryRecord
    score: float
    recency: float
    importance: float
    relevance: float
    """The normalised terms the score was made of, for inspection and tests."""


@dataclass(frozen=True, slots=True)
class Retrieval:
    memories: tuple[RetrievedMemory, ...]
    num_candidates: int
    timings_ms: Mapping[str, float] = field(default_factory=dict)


class MemoryStream:
    """One agent's memory stream. Thread-safe: writes and index searches hold the stream's lock."""

    def __init__(self, tables: MemoryTables, agent: str, *, embedder: Embedder, index_dir: Path | None = None,
                 spec: IndexSpec = MEMORY_INDEX_SPEC) -> None:
        if not agent.strip():
            raise InvalidInput("agent name is empty; name the agent whose memories these are")
        self.agent = agent
        self.tables = tables
        self.embedder = embedder
        self._lock = threading.RLock()
        self._index = CollectionIndex.open(index_dir, spec, embedder.dim, tables.vector_source(agent, embedder.dim))
        self._columns = MemoryColumns(tables.scoring_columns(agent))

    def close(self) -> None:
        """Save the index (when it has a directory) and release it; the catalog stays open."""
        with self._lock:
            if self._index.directory is not None:
                self._index.save()
            self._index.close()

    def save(self) -> None:
        with self._lock:
            self._index.save()

    def __len__(self) -> int:
        return len(self._index)

    # -- writes --------------------------------------------------------------------------------------------

    def add(self, kind: MemoryKind, text: str, *, at_h: float, importance: float | None = None,
            evidence: Sequence[int] = (), metadata: Mapping[str, Any] | None = None) -> MemoryRecord:
        """Store one memory (importance None = score it later) and return it; searchable on return."""
        memory = NewMemory(kind=kind, text=text, created_h=at_h, importance=importance, evidence=tuple(evidence),
                           metadata=dict(metadata or {}))
        ids = self.add_many([memory])
        return self.tables.get(self.agent, [int(ids[0])])[0]

    def add_many(self, memories: Sequence[NewMemory], *, vectors: np.ndarray | None = None) -> np.ndarray:
        """Store a batch in one transaction, embedding the texts unless `vectors` (n, dim) are given."""
        vectors = self._vectors(memories, vectors)
        with self._lock:
            ids = self.tables.append(self.agent, memories, vectors)
            self._publish(memories, ids, vectors)
        return ids

    def add_with(self, memory: NewMemory, write: Callable[[MemoryRecord], T]) -> tuple[MemoryRecord, T]:
        """Store `memory` and, in the same catalog transaction, whatever `write` stores for it (a chat exchange's
        turns, which cite the memory's id): both commit or neither does. The index and the scoring columns learn
        the memory only after the commit, so a `write` that fails leaves no trace anywhere. Returns the record
        and what `write` returned."""
        vectors = self._vectors([memory], None)
        with self._lock:
            with self.tables.atomic():
                ids = self.tables.append(self.agent, [memory], vectors)
                record = self.tables.get(self.agent, [int(ids[0])])[0]
                result = write(record)
            self._publish([memory], ids, vectors)
        return record, result

    def _vectors(self, memories: Sequence[NewMemory], vectors: np.ndarray | None) -> np.ndarray:
        """`vectors` (or the texts' embeddings) checked and normalised, (n, dim) float32."""
        if vectors is None:
            vectors = self.embedder.embed_documents([m.text for m in memories]) if memories else None
        vectors = np.zeros((0, self.embedder.dim), np.float32) if vectors is None else np.asarray(vectors, np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.embedder.dim:
            raise InvalidInput(f"memory vectors must be (n, {self.embedder.dim}), got {vectors.shape}")
        try:
            return unit_rows(vectors)
        except NotNormalisable:
            raise InvalidInput("memory vectors must be finite and non-zero (cosine similarity divides by the norm)") \
                from None

    def _publish(self, memories: Sequence[NewMemory], ids: np.ndarray, vectors: np.ndarray) -> None:
        """Stored memories into the index and the scoring columns (the caller holds the stream's lock)."""
        self._index.add(ids, vectors)
        self._columns.append(ids, np.array([np.nan if m.importance is None else m.importance for m in memories]),
                             np.array([m.created_h for m in memories], np.float64))

    def set_importance(self, ids: Sequence[int], values: Sequence[float]) -> None:
        """Record scored importance (1-10); the memories must be this agent's."""
        with self._lock:
            self.tables.set_importance(ids, values)
            self._columns.set_importance(np.asarray(ids, np.int64), np.asarray(values, np.float64))

    def mark_accessed(self, ids: Sequence[int], *, at_h: float) -> None:
        """Record that these memories were used at `at_h` (what makes recency mean 'recently retrieved')."""
        with self._lock:
            self.tables.touch(ids, at_h)
            self._columns.touch(np.asarray(ids, np.int64), at_h)

    # -- reads ---------------------------------------------------------------------------------------------

    def get(self, ids: Sequence[int]) -> list[MemoryRecord]:
        return self.tables.get(self.agent, ids)

    def recent(self, n: int, *, kinds: Sequence[str] | None = None) -> list[MemoryRecord]:
        """The `n` newest memories, newest first."""
        return self.tables.recent(self.agent, limit=n, kinds=kinds)

    def retrieve(self, query: str | np.ndarray, *, now_h: float,
                 options: RetrievalOptions = RetrievalOptions()) -> Retrieval:
        """The best `options.k` memories for `query` (text, or an embedding) at simulation time `now_h`."""
        timings: dict[str, float] = {}
        started = time.perf_counter()
        q = self._query_vector(query, timings)
        with self._lock:
            if len(self._index) == 0:
                return Retrieval((), 0, {"total_ms": _ms(started)})
            ids, relevance = self._candidates(q, options, now_h, timings)
            importance, last_accessed_h = self._columns.lookup(ids)
        t = time.perf_counter()
        parts = score_candidates(relevance=relevance, importance=importance, last_accessed_h=last_accessed_h,
                                 now_h=now_h, weights=options.weights)
        best = top_k(parts.total, options.k)
        timings["score_ms"] = _ms(t)
        t = time.perf_counter()
        records = {r.id: r for r in self.tables.get(self.agent, ids[best])}
        chosen = tuple(RetrievedMemory(records[int(ids[b])], float(parts.total[b]), float(parts.recency[b]),
                                       float(parts.importance[b]), float(parts.relevance[b]))
                       for b in best if int(ids[b]) in records)
        timings["hydrate_ms"] = _ms(t)
        if options.mark_accessed and chosen:
            t = time.perf_counter()
            self.mark_accessed([m.memory.id for m in chosen], at_h=now_h)
            timings["mark_accessed_ms"] = _ms(t)
        timings["total_ms"] = _ms(started)
        return Retrieval(chosen, len(ids), timings)

    def _query_vector(self, query: str | np.ndarray, timings: dict[str, float]) -> np.ndarray:
        if isinstance(query, str):
            if not query.strip():
                raise InvalidInput("retrieval query is empty; say what the agent is thinking about")
            t = time.perf_counter()
            q = self.embedder.embed_query(query)
            timings["embed_ms"] = _ms(t)
            return np.asarray(q, np.float32)
        q = np.asarray(query, np.float32).reshape(-1)
        if q.shape[0] == self.embedder.dim:
            with contextlib.suppress(NotNormalisable):
                return unit_vector(q)
        raise InvalidInput(f"query vector must be finite, non-zero and {self.embedder.dim} wide, got {q.shape}")

    def _candidates(self, q: np.ndarray, options: RetrievalOptions, now_h: float,
                    timings: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
        """(ids (m,), relevance (m,)) of the candidate union. The nearest come with exact inner products from the
        full-width index; the prior ones it did not return are scored exactly over just them."""
        t = time.perf_counter()
        near = self._index.search(q, options.relevant) if options.relevant else None
        timings["nearest_ms"] = _ms(t)
        t = time.perf_counter()
        near_ids = near.ids if near is not None else np.zeros(0, np.int64)
        check_clock(now_h, latest_h=self._columns.latest_access_h())
        extra = np.setdiff1d(self._columns.top_prior(options.prior, now_h=now_h, weights=options.weights), near_ids)
        timings["prior_ms"] = _ms(t)
        t = time.perf_counter()
        found = self._index.search(q, len(extra), allowed_ids=extra) if len(extra) else None
        timings["extra_relevance_ms"] = _ms(t)
        parts = [(near.ids, near.scores)] if near is not None else []
        if found is not None:
            parts.append((found.ids, found.scores))
        ids = np.concatenate([p[0] for p in parts]).astype(np.int64)
        return ids, np.concatenate([p[1] for p in parts]).astype(np.float64)

def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000.0, 3)
