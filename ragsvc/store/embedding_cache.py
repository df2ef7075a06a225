"""The catalog's embedding cache: a chunk text's vector by (embedder id, text hash), so re-ingesting a text
(another id, a deleted and re-sent document, a re-run bulk load) never embeds it twice.

The table's keys are also held as a Bloom filter (`table_keys.py`). Almost every text a live ingest embeds is
new: for those the lookup runs no statement, and their rows go in with a plain INSERT instead of `ON CONFLICT
DO NOTHING` (a primary-key probe per row). Rows the filter calls "perhaps present" (cached texts, false
positives) take the conflict-tolerant insert, so a wrong "perhaps" costs a statement and nothing else.

A small write's rows (a live ingest's few chunks) are not inserted with its transaction: they wait in memory,
where lookups find them, until `DEFERRED_ROWS` have gathered, and then go in with the transaction that tips
the count over, in one conflict-tolerant statement. Only rows the key filter calls new wait: a text that may be
cached already keeps its stored row, as before. Inserting a one-chunk ingest's row was one of the four
statements of its transaction and a fifth of its catalog CPU under `ragsvc bench load`. Closing the catalog
writes what is waiting. What a crash loses is only cache: those texts are embedded again if they come back;
the documents and chunks themselves commit with their transaction as always. Rows wait whatever becomes of the
transaction that brought them (a vector depends on its text alone, never on the document around it).
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

DEFERRED_ROWS = 256
"""Small writes' rows held in memory at most before they are inserted together (see the module docstring)."""


class EmbeddingCache:
    """Lookups on the calling thread's read cursor; inserts on the writing connection, inside the caller's
    transaction, with the catalog's lock held."""

    def __init__(self, conn: duckdb.DuckDBPyConnection, lock: threading.RLock,
                 reader: Callable[[], duckdb.DuckDBPyConnection], *, deferred_rows: int | None = None) -> None:
        """`deferred_rows`: small writes' rows held before they are inserted (default DEFERRED_ROWS; 0: every
        write inserts its own)."""
        deferred_rows = DEFERRED_ROWS if deferred_rows is None else deferred_rows
        if deferred_rows < 0:
            raise ValueError(f"deferred_rows must be 0 or more, got {deferred_rows}")
        self._conn = conn
        self._lock = lock
        self._reader = reader
        self._keys = TableKeys(conn, lock, table="embedding_cache", columns=("embedder_id", "text_hash"))
        self.deferred_rows = deferred_rows
        self._deferred: dict[str, dict[str, np.ndarray]] = {}  # embedder id -> text hash -> (dim,) float32
        self._num_deferred = 0
        self._deferred_lock = threading.Lock()  # lookups read the rows without the catalog's lock

    @property
    def num_deferred(self) -> int:
        """Rows waiting in memory to be inserted."""
        return self._num_deferred

    def lookup(self, embedder_id: str, text_hashes: list[str], dim: int) -> dict[str, np.ndarray]:
        """text hash -> (dim,) float32 for the hashes cached under `embedder_id`."""
        wanted = sorted(set(text_hashes))
        found: dict[str, np.ndarray] = {}
        if self._num_deferred:
            with self._deferred_lock:
                waiting = self._deferred.get(embedder_id, {})
                found = {h: waiting[h] for h in wanted if h in waiting}
            wanted = [h for h in wanted if h not in found]
        maybe = self._keys.might_contain(embedder_id, wanted)
        wanted = [h for h, m in zip(wanted, maybe, strict=True) if m]
        if not wanted:
            return found
        table = self._reader().sql(
            "SELECT text_hash, vector FROM embedding_cache WHERE embedder_id = ? AND list_contains(?, text_hash)",
            params=[embedder_id, wanted],
        ).to_arrow_table()
        vectors = arrow_to_vectors(table.column("vector"), dim)
        found.update(zip(table.column("text_hash").to_pylist(), vectors, strict=True))
        return found

    def insert(self, embedder_id: str, text_hashes: list[str], vectors: np.ndarray) -> None:
        """Cache (n, dim) `vectors` of `text_hashes` (a hash already cached keeps its row). Call with the lock
        held and a transaction open: the rows inserted now commit or roll back with the caller's; a small
        write's new rows wait in memory instead (see the module docstring)."""
        first: dict[str, int] = {}  # each hash once (a text repeated in a batch), with its first row
        for row, text_hash in enumerate(text_hashes):
            first.setdefault(text_hash, row)
        hashes, rows = list(first), list(first.values())
        if not hashes:
            return
        maybe = self._keys.might_contain(embedder_id, hashes)
        if few(len(hashes)) and self.deferred_rows:  # the new ones wait in memory; perhaps-cached ones go now
            new = [i for i, m in enumerate(maybe) if not m]
            if new:
                self._defer(embedder_id, [hashes[i] for i in new], vectors[[rows[i] for i in new]])
            kept = [i for i, m in enumerate(maybe) if m]
            if not kept:
                return
            hashes, rows, maybe = [hashes[i] for i in kept], [rows[i] for i in kept], maybe[kept]
        for conflict in (False, True):
            picked = [i for i, m in enumerate(maybe) if bool(m) == conflict]
            if picked:
                self._insert([hashes[i] for i in picked], vectors[[rows[i] for i in picked]], embedder_id,
                              on_conflict=conflict)
        self._keys.add(embedder_id, hashes)

    def flush(self) -> None:
        """Insert the rows waiting in memory. Call with the lock held and a transaction open (closing the
        catalog opens one for it)."""
        with self._deferred_lock:
            deferred, self._deferred, self._num_deferred = self._deferred, {}, 0
        for embedder_id, rows in deferred.items():
            # conflict-tolerant: a bulk write may have stored one of these texts since it was deferred
            self._insert(list(rows), np.stack(list(rows.values())), embedder_id, on_conflict=True)

    def _defer(self, embedder_id: str, hashes: list[str], vectors: np.ndarray) -> None:
        """Hold (n, dim) `vectors` of `hashes` in memory; insert everything held once DEFERRED_ROWS are."""
        with self._deferred_lock:
            waiting = self._deferred.setdefault(embedder_id, {})
            for text_hash, vector in zip(hashes, vectors, strict=True):
                if text_hash not in waiting:
                    waiting[text_hash] = np.array(vector, dtype=np.float32)  # a copy: the caller's rows may change
                    self._num_deferred += 1
            full = self._num_deferred >= self.deferred_rows
        self._keys.add(embedder_id, hashes)  # lookups ask the table for them once they leave memory
        if full:
            self.flush()

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
