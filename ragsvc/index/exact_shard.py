"""ExactShard: brute-force numpy search, the oracle every approximate shard is tested against.

Also the collection's store while it is too small to train an ANN structure. Rows live in growable buffers
(capacity doubles) so many small adds stay linear; deletes compact the rows at once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ragsvc.errors import IndexCorrupt
from ragsvc.index.atomic import atomic_write
from ragsvc.index.results import ShardHits
from ragsvc.index.shard import ShardMetric, as_ids, check_add, check_queries, exact_scores, pad, top_k

_SCAN_ROWS = 65536  # rows per block in a scan, to bound the (q, rows) score matrix


class ExactShard:
    def __init__(self, dim: int, *, metric: ShardMetric = "ip") -> None:
        self.dim = dim
        self.metric: ShardMetric = metric
        self._ids = np.zeros(0, dtype=np.int64)  # (capacity,)
        self._vectors = np.zeros((0, dim), dtype=np.float32)  # (capacity, dim)
        self._count = 0

    def __len__(self) -> int:
        return self._count

    @property
    def nbytes(self) -> int:
        return int(self._ids[: self._count].nbytes + self._vectors[: self._count].nbytes)

    @property
    def ids(self) -> np.ndarray:
        return self._ids[: self._count]

    @property
    def vectors(self) -> np.ndarray:
        return self._vectors[: self._count]

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids, vectors = check_add(ids, vectors, self.dim)
        replaced = np.isin(ids, self.ids)
        if replaced.any():  # insert-or-replace, like hnswlib
            self.delete(ids[replaced])
        self._reserve(self._count + len(ids))
        self._ids[self._count : self._count + len(ids)] = ids
        self._vectors[self._count : self._count + len(ids)] = vectors
        self._count += len(ids)

    def delete(self, ids: np.ndarray) -> None:
        keep = ~np.isin(self.ids, np.asarray(ids, dtype=np.int64))
        n = int(keep.sum())
        if n == self._count:
            return
        self._ids[:n] = self.ids[keep]
        self._vectors[:n] = self.vectors[keep]
        self._count = n

    def live_ids(self) -> np.ndarray:
        return self.ids.copy()

    def get(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found ids (m,), their vectors (m, dim)) for the requested ids this shard holds."""
        mask = np.isin(self.ids, np.asarray(ids, dtype=np.int64))
        return self.ids[mask], self.vectors[mask]

    def search(self, queries: np.ndarray, k: int, *, allowed_ids: np.ndarray | None = None,
               ef_search: int | None = None) -> ShardHits:
        queries = check_queries(queries, self.dim, k)
        allowed = as_ids(allowed_ids)
        ids, vectors = (self.ids, self.vectors) if allowed is None else self.get(allowed)
        best = ShardHits(np.zeros((len(queries), 0), dtype=np.int64),
                         np.full((len(queries), 0), -np.inf, dtype=np.float32))
        for start in range(0, len(ids), _SCAN_ROWS):
            scores = exact_scores(queries, vectors[start : start + _SCAN_ROWS], self.metric)  # (q, rows)
            block_ids = np.broadcast_to(ids[start : start + _SCAN_ROWS], scores.shape)  # (q, rows)
            merged_scores = np.concatenate([best.scores, scores], axis=1)
            merged_ids = np.concatenate([best.ids, block_ids], axis=1)
            best = top_k(merged_scores, merged_ids, min(k, merged_ids.shape[1]))
        return pad(best.scores, best.ids, k)

    def save(self, path: Path) -> None:
        def write(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                np.savez(handle, ids=self.ids, vectors=self.vectors, dim=np.int64(self.dim))

        atomic_write(path, write)

    @classmethod
    def load(cls, path: Path, *, dim: int, metric: ShardMetric = "ip") -> ExactShard:
        try:
            with np.load(path, allow_pickle=False) as data:
                ids, vectors, stored_dim = data["ids"], data["vectors"], int(data["dim"])
        except (OSError, ValueError, KeyError, EOFError) as exc:
            raise IndexCorrupt(f"exact shard {path} cannot be read ({exc}); it will be rebuilt") from exc
        if stored_dim != dim or vectors.shape != (len(ids), dim):
            raise IndexCorrupt(f"exact shard {path} holds width {stored_dim}, expected {dim}; it will be rebuilt")
        shard = cls(dim, metric=metric)
        shard._ids, shard._vectors, shard._count = ids.astype(np.int64), vectors.astype(np.float32), len(ids)
        return shard

    def _reserve(self, needed: int) -> None:
        capacity = len(self._ids)
        if needed <= capacity:
            return
        capacity = max(needed, 2 * capacity, 1024)
        ids = np.zeros(capacity, dtype=np.int64)
        vectors = np.zeros((capacity, self.dim), dtype=np.float32)
        ids[: self._count] = self.ids
        vectors[: self._count] = self.vectors
        self._ids, self._vectors = ids, vectors
