"""MemoryColumns: an in-memory copy of the two columns retrieval ranks on (importance, last access) for one
agent, so choosing candidates costs a numpy partial sort instead of catalog queries on every retrieval.

It is derived data like the vector index: loaded from the catalog when the stream opens, and changed only
after the catalog committed the same change (MemoryStream is the one writer of its agent's memories).
24 bytes a memory: 2.4 MB at 100k. Ids only grow (one global sequence), so rows stay sorted by id and lookups
are binary searches; the arrays grow by doubling, so an append is amortised O(1).
"""

from __future__ import annotations

import numpy as np

from ragsvc.agents.scoring import RetrievalWeights, fill_pending, min_max, recency
from ragsvc.store.memories import ScoringColumns


class MemoryColumns:
    def __init__(self, columns: ScoringColumns) -> None:
        order = np.argsort(columns.ids, kind="stable")
        n = len(order)
        capacity = max(1024, 2 * n)
        self._ids = np.zeros(capacity, np.int64)
        self._importance = np.full(capacity, np.nan)
        self._last = np.zeros(capacity)
        self._n = n
        self._ids[:n] = columns.ids[order]
        self._importance[:n] = columns.importance[order]
        self._last[:n] = columns.last_accessed_h[order]

    def __len__(self) -> int:
        return self._n

    @property
    def ids(self) -> np.ndarray:
        return self._ids[: self._n]

    def append(self, ids: np.ndarray, importance: np.ndarray, created_h: np.ndarray) -> None:
        """New memories (ids above every held id; importance NaN = pending), last accessed when created."""
        m = len(ids)
        if not m:
            return
        if self._n and int(ids.min()) <= int(self._ids[self._n - 1]):
            raise RuntimeError("memory ids must grow: the catalog's sequence handed out an id already held")
        if self._n + m > len(self._ids):
            self._grow(self._n + m)
        order = np.argsort(ids, kind="stable")
        span = slice(self._n, self._n + m)
        self._ids[span], self._importance[span], self._last[span] = ids[order], importance[order], created_h[order]
        self._n += m

    def _grow(self, needed: int) -> None:
        capacity = max(needed, 2 * len(self._ids))
        for name, fill in (("_ids", 0), ("_importance", np.nan), ("_last", 0.0)):
            old = getattr(self, name)
            new = np.full(capacity, fill, dtype=old.dtype)
            new[: self._n] = old[: self._n]
            setattr(self, name, new)

    def _rows(self, ids: np.ndarray) -> np.ndarray:
        """Row of each id (all must be held)."""
        rows = np.searchsorted(self.ids, ids)
        if len(ids) and (rows.max() >= self._n or np.any(self._ids[rows] != ids)):
            raise RuntimeError("memory columns are out of step with the catalog: an id is not held")
        return rows

    def set_importance(self, ids: np.ndarray, values: np.ndarray) -> None:
        self._importance[self._rows(ids)] = values

    def touch(self, ids: np.ndarray, at_h: float) -> None:
        rows = self._rows(ids)
        self._last[rows] = np.maximum(self._last[rows], at_h)

    def lookup(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(importance (m,) NaN = pending, last_accessed_h (m,)) of the given ids."""
        rows = self._rows(ids)
        return self._importance[rows], self._last[rows]

    def latest_access_h(self) -> float:
        return float(self._last[: self._n].max()) if self._n else 0.0

    def top_prior(self, n: int, *, now_h: float, weights: RetrievalWeights) -> np.ndarray:
        """Ids of the `n` memories best by the score without its relevance term (weighted recency + importance,
        each min-max normalised over all memories): the ones relevance alone would never bring forward.

        One list for both terms rather than a most-recent and a most-important list: with whole-number ratings
        thousands of memories tie at 10, and a most-important list would pick among them blindly where this
        one takes the most recent of them."""
        if n <= 0 or not self._n:
            return np.zeros(0, np.int64)
        if n >= self._n:
            return self.ids.copy()
        prior = (weights.recency * min_max(recency(self._last[: self._n], now_h=now_h, decay=weights.decay))
                 + weights.importance * min_max(fill_pending(self._importance[: self._n])))
        return self.ids[np.argpartition(-prior, n - 1)[:n]]
