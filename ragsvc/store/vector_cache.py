"""Per-chunk vector caches for rescoring stages: vectors of a chunk under some embedder other than the one
its collection was indexed with (a stronger reranking embedder, say), computed once and reused.

Entries are keyed by (embedder id, chunk id) and carry the hash of the text they were computed from; a lookup
passes the text hash it expects and an entry whose hash differs is a miss. Chunk ids come from one global,
ever-growing sequence (store/schema.py) and a chunk's text never changes under its id (replacing a document
gives its chunks new ids), so within one catalog the hash never disagrees; it is there so that hits from any
other id space (an agent's memory stream, a test's hand-built hits) can share a cache and never be served a
vector for a different text. Deleting chunks deletes their entries (Catalog._remove_documents), only to
reclaim space.

    VectorCache (Protocol)       get(embedder_id, chunk_ids, text_hashes) / put(...)
    ├── InMemoryVectorCache      a bounded LRU dict, per process (tests, embedded use without a catalog)
    └── DuckdbVectorCache        the catalog's `chunk_vector_cache` table, shared by every process run on it
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import duckdb
import numpy as np
import pyarrow as pa

from ragsvc.errors import InvalidInput
from ragsvc.store.arrow import arrow_to_vectors, vectors_to_arrow
from ragsvc.store.transaction import rollback


@runtime_checkable
class VectorCache(Protocol):
    """Vectors by (embedder id, chunk id), valid only for the text hash they were stored with."""

    def get(self, embedder_id: str, chunk_ids: Sequence[int], text_hashes: Sequence[str]) -> dict[int, np.ndarray]:
        """chunk id -> (dim,) float32 for the ids cached under `embedder_id` with the same text hash."""
        ...

    def put(self, embedder_id: str, chunk_ids: Sequence[int], text_hashes: Sequence[str], vectors: np.ndarray) -> None:
        """Store (len(chunk_ids), dim) float32 `vectors`, replacing any entry for the same key."""
        ...


def _check_put(chunk_ids: Sequence[int], text_hashes: Sequence[str], vectors: np.ndarray) -> None:
    if not len(chunk_ids) == len(text_hashes) == len(vectors) or vectors.ndim != 2:
        raise InvalidInput(
            f"put() needs one text hash and one vector row per chunk id: got {len(chunk_ids)} ids, "
            f"{len(text_hashes)} hashes and vectors of shape {vectors.shape}"
        )


class InMemoryVectorCache:
    """A process-local LRU of at most `max_entries` vectors (about 1.5 KB each at 384 d)."""

    def __init__(self, *, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self._max_entries = max_entries
        self._entries: OrderedDict[tuple[str, int], tuple[str, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, embedder_id: str, chunk_ids: Sequence[int], text_hashes: Sequence[str]) -> dict[int, np.ndarray]:
        found: dict[int, np.ndarray] = {}
        with self._lock:
            for chunk_id, text_hash in zip(chunk_ids, text_hashes, strict=True):
                key = (embedder_id, int(chunk_id))
                entry = self._entries.get(key)
                if entry is not None and entry[0] == text_hash:
                    self._entries.move_to_end(key)
                    found[int(chunk_id)] = entry[1]
        return found

    def put(self, embedder_id: str, chunk_ids: Sequence[int], text_hashes: Sequence[str], vectors: np.ndarray) -> None:
        _check_put(chunk_ids, text_hashes, vectors)
        with self._lock:
            for chunk_id, text_hash, vector in zip(chunk_ids, text_hashes, vectors, strict=True):
                key = (embedder_id, int(chunk_id))
                self._entries[key] = (text_hash, np.array(vector, dtype=np.float32))  # a copy, not a view
                self._entries.move_to_end(key)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)


class DuckdbVectorCache:
    """The `chunk_vector_cache` table of a Catalog, through the catalog's one connection and its lock (duckdb
    connections are not safe to share across threads without it).

    Unbounded, like the catalog: entries go when their chunks are deleted. Get it from `Catalog.vector_cache()`.
    """

    def __init__(self, conn: duckdb.DuckDBPyConnection, lock: threading.RLock) -> None:
        self._conn = conn
        self._lock = lock

    def get(self, embedder_id: str, chunk_ids: Sequence[int], text_hashes: Sequence[str]) -> dict[int, np.ndarray]:
        if not chunk_ids:
            return {}
        wanted = dict(zip((int(i) for i in chunk_ids), text_hashes, strict=True))
        with self._lock:
            table = self._conn.sql(
                "SELECT chunk_id, text_hash, vector FROM chunk_vector_cache "
                "WHERE embedder_id = ? AND chunk_id = any(?::BIGINT[])",
                params=[embedder_id, list(wanted)],
            ).to_arrow_table()
        if table.num_rows == 0:
            return {}
        dim = len(table.column("vector")[0])
        vectors = arrow_to_vectors(table.column("vector"), dim)  # (rows, dim)
        ids, hashes = table.column("chunk_id").to_pylist(), table.column("text_hash").to_pylist()
        return {i: v for i, h, v in zip(ids, hashes, vectors, strict=True) if wanted[i] == h}

    def put(self, embedder_id: str, chunk_ids: Sequence[int], text_hashes: Sequence[str], vectors: np.ndarray) -> None:
        _check_put(chunk_ids, text_hashes, vectors)
        if not chunk_ids:
            return
        incoming = pa.table({
            "chunk_id": pa.array([int(i) for i in chunk_ids], pa.int64()),
            "text_hash": pa.array(list(text_hashes), pa.string()),
            "vector": vectors_to_arrow(np.asarray(vectors, np.float32)),
        })
        conn = self._conn
        with self._lock:
            conn.register("incoming_vector_cache", incoming)
            try:
                # delete + insert rather than ON CONFLICT DO UPDATE: one statement pair that also covers a
                # changed text hash, and duckdb's upsert of list columns has had bugs across versions
                conn.execute("BEGIN TRANSACTION")
                conn.execute(
                    "DELETE FROM chunk_vector_cache WHERE embedder_id = ? "
                    "AND chunk_id IN (SELECT chunk_id FROM incoming_vector_cache)", [embedder_id],
                )
                conn.execute(
                    "INSERT INTO chunk_vector_cache SELECT DISTINCT ON (chunk_id) ?, chunk_id, text_hash, vector "
                    "FROM incoming_vector_cache", [embedder_id],
                )
                conn.execute("COMMIT")
            except BaseException:
                rollback(conn)
                raise
            finally:
                conn.unregister("incoming_vector_cache")

    def count(self, embedder_id: str | None = None) -> int:
        """Entries held, for one embedder or all."""
        sql, params = "SELECT count(*) FROM chunk_vector_cache", []
        if embedder_id is not None:
            sql, params = sql + " WHERE embedder_id = ?", [embedder_id]
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
        return int(rows[0][0])
