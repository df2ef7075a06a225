"""The write contract between the catalog and Ray-hosted shards: commit first, then fan out.

The API process is the catalog's single writer (duckdb admits one). An ingest runs one catalog transaction,
which returns what changed (`WriteResult`); only then are the replicas told, removals before additions
(a replaced document's old chunks go, its new chunks come). The ingest is acknowledged after the commit,
not after the fan-out: a replica that misses the fan-out (dead, restarting, timed out) is marked stale by the
index and replays the committed rows from the catalog, so an acknowledged write is never lost, and a search
never merges a replica that does not cover it.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from ragsvc.store.records import WriteResult


class ShardedWrites(Protocol):
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None: ...

    def delete(self, ids: np.ndarray) -> None: ...


def apply_committed(index: ShardedWrites, result: WriteResult) -> None:
    """Follow one committed catalog transaction: drop its removed chunks, then add its new ones."""
    if len(result.removed_ids):
        index.delete(result.removed_ids)
    if len(result.added_ids):
        index.add(result.added_ids, result.added_vectors)
