"""The catalog's embedding cache: a chunk text's vector by (embedder id, text hash), so re-ingesting a text
(another id, a deleted and re-sent document, a re-run bulk load) never embeds it twice.

The table's keys are also held as a Bloom filter (`table_keys.py`). Almost every text a live ingest embeds is
new: for those the lookup runs no statement, and their rows go in with a plain INSERT instead of `ON CONFLICT
DO NOTHING` (a primary-key probe per row). Rows the filter calls "perhaps present" (cached texts, false
positives) take the conflict-tolerant insert, so a wrong "perhaps" costs a statement and nothing else.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import duckdb
import numpy as np
import pyarrow as pa

from ragsvc.store.arrow import arrow_to_vectors, vectors_to_arrow
from ragsvc.store.row_insert import few, insert_arrow, insert_values
from ragsvc.store.table_keys import TableKeys


class EmbeddingCache:
    """Lookups on the calling thread's read cursor; inserts on the writing connection, inside the caller's
    transaction, with the catalog's lock held."""

    def __init__(self, conn: duckdb.DuckDBPyConnection, lock: threading.RLock,
                 reader: Callable[[], duckdb.DuckDBPyConnection]) -> None:
        self._conn = conn
        self._lock = lock
        self._reader = reader
        self._keys = TableKeys(conn, lock, table="embedding_cache", columns=("embedder_id", "text_hash"))

    def lookup(self, embedder_id: str, text_hashes: list[str], dim: int) -> dict[str, np.ndarray]:
        """text hash -> (dim,) float32 for the hashes cached under `embedder_id`."""
        wanted = sorted(set(text_hashes))
        maybe = self._keys.might_contain(embedder_id, wanted)
        wanted = [h for h, m in zip(wanted, maybe, strict=True) if m]
        if not wanted:
            return {}
        table = self._reader().sql(
            "SELECT text_hash, vector FROM embedding_cache WHERE embedder_id = ? AND list_contains(?, text_hash)",
            params=[embedder_id, wanted],
        ).to_arrow_table()
        vectors = arrow_to_vectors(table.column("vector"), dim)
        return dict(zip(table.column("text_hash").to_pylist(), vectors, strict=True))

    def insert(self, embedder_id: str, text_hashes: list[str], vectors: np.ndarray) -> None:
        """Cache (n, dim) `vectors` of `text_hashes` (a hash already cached keeps its row). Call with the lock
        held and a transaction open: the rows commit or roll back with the caller's."""
        first: dict[str, int] = {}  # each hash once (a text repeated in a batch), with its first row
        for row, text_hash in enumerate(text_hashes):
            first.setdefault(text_hash, row)
        hashes, rows = list(first), list(first.values())
        if not hashes:
            return
        maybe = self._keys.might_contain(embedder_id, hashes)
        for conflict in (False, True):
            picked = [i for i, m in enumerate(maybe) if bool(m) == conflict]
            if picked:
                self._insert([hashes[i] for i in picked], vectors[[rows[i] for i in picked]], embedder_id,
                              on_conflict=conflict)
        self._keys.add(embedder_id, hashes)

    def _insert(self, hashes: list[str], vectors: np.ndarray, embedder_id: str, *, on_conflict: bool) -> None:
        tail = "ON CONFLICT DO NOTHING" if on_conflict else ""
        if few(len(hashes)):
            insert_values(self._conn, "INSERT INTO embedding_cache", "(?, ?, ?)",
                          [(embedder_id, h, v.tolist()) for h, v in zip(hashes, vectors, strict=True)], tail=tail)
            return
        table = pa.table({"text_hash": pa.array(hashes, pa.string()), "vector": vectors_to_arrow(vectors)})
        insert_arrow(self._conn, table, "incoming_cache",
                     f"INSERT INTO embedding_cache SELECT ?, text_hash, vector FROM incoming_cache {tail}",
                     [embedder_id])
