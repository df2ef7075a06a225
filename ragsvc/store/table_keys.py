"""The keys of a catalog table, as a Bloom filter that never misses a stored key: "certainly absent" without
a statement.

A live ingest's documents and chunk texts are almost always new, and asking duckdb whether they are stored
(a document's content hash, a text's cached vector) costs a statement each time. A `TableKeys` answers
"certainly absent" from memory. That answer is exact because this process is the table's only writer: duckdb
admits one writing process per file, and every write goes through the catalog's one connection under its
lock. The filter is built from the table under that lock on first use, and each insert adds its keys under
the same lock before its transaction commits. A rolled-back insert leaves keys that are not in the table, and
a delete leaves its keys behind: both only cost a later statement, never a wrong answer.

A key is a (namespace, text) pair of two columns (collection and document id, embedder id and text hash),
hashed by `key_of`. The filter grows (rebuilt from the table at twice the keys) when it passes its capacity.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import duckdb
import numpy as np

from ragsvc.store.key_filter import KeyFilter, key_of, keys_of

SCAN_BATCH_ROWS = 65_536
"""Keys read per Arrow batch while a filter is built (bounded memory whatever the table's size)."""


class TableKeys:
    """The (namespace, text) keys of `table`'s two columns `columns`, e.g. ("collection", "id")."""

    def __init__(self, conn: duckdb.DuckDBPyConnection, lock: threading.RLock, *, table: str,
                 columns: tuple[str, str]) -> None:
        self._conn = conn
        self._lock = lock
        self._table = table
        self._columns = columns
        self._filter: KeyFilter | None = None  # built on first use

    def might_contain(self, namespace: str, texts: Sequence[str]) -> np.ndarray:
        """(len(texts),) bool: False means (namespace, text) is certainly not in the table. Needs no lock: a
        key being added concurrently may read as absent, as it would had the question come first."""
        return self._current().might_contain(keys_of(namespace, texts))

    def add(self, namespace: str, texts: Sequence[str]) -> None:
        """Record keys about to be inserted: call with the lock held, before the transaction commits."""
        key_filter = self._current()
        key_filter.add(keys_of(namespace, texts))
        if key_filter.full:
            self._filter = self._build(2 * key_filter.count)

    def _current(self) -> KeyFilter:
        key_filter = self._filter
        if key_filter is None:
            with self._lock:
                if self._filter is None:
                    count = self._conn.execute(f"SELECT count(*) FROM {self._table}").fetchall()[0][0]
                    self._filter = self._build(2 * int(count))
                key_filter = self._filter
        return key_filter

    def _build(self, capacity: int) -> KeyFilter:
        """A filter of every key in the table, sized for `capacity` keys (lock held: no insert can slip by)."""
        key_filter = KeyFilter.for_capacity(capacity)
        first, second = self._columns
        scan = self._conn.sql(f"SELECT {first}, {second} FROM {self._table}").to_arrow_reader(SCAN_BATCH_ROWS)
        for batch in scan:
            pairs = zip(batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True)
            key_filter.add(np.fromiter((key_of(n, t) for n, t in pairs), dtype=np.uint64))
        return key_filter
