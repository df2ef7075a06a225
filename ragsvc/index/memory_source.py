"""A VectorSource over in-memory arrays: builds a CollectionIndex without a store (benchmarks, tests)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ragsvc.index.shard import check_add


class InMemoryVectorSource:
    """Live chunks as (ids, vectors) arrays; `append` and `remove` mimic the store's writes."""

    def __init__(self, vectors: np.ndarray, *, ids: np.ndarray | None = None) -> None:
        vectors = np.asarray(vectors, dtype=np.float32)
        ids = np.arange(1, len(vectors) + 1, dtype=np.int64) if ids is None else ids  # chunk ids start at 1
        ids, vectors = check_add(ids, vectors, vectors.shape[1])
        order = np.argsort(ids)
        self.ids, self.vectors = ids[order], vectors[order]

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def append(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids, vectors = check_add(ids, vectors, self.dim)
        all_ids = np.concatenate([self.ids, ids])
        order = np.argsort(all_ids)
        self.ids, self.vectors = all_ids[order], np.concatenate([self.vectors, vectors])[order]

    def remove(self, ids: np.ndarray) -> None:
        keep = ~np.isin(self.ids, np.asarray(ids, np.int64))
        self.ids, self.vectors = self.ids[keep], self.vectors[keep]

    def max_chunk_id(self) -> int:
        return int(self.ids.max()) if len(self.ids) else 0

    def count(self) -> int:
        return len(self.ids)

    def iter_vectors(self, *, after_id: int = 0, batch_size: int = 8192) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        start = int(np.searchsorted(self.ids, after_id, side="right"))
        for i in range(start, len(self.ids), batch_size):
            yield self.ids[i : i + batch_size], self.vectors[i : i + batch_size]

    def vectors_for(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, np.int64).reshape(-1)
        pos = np.minimum(np.searchsorted(self.ids, ids), max(len(self.ids) - 1, 0))
        if not len(self.ids) or np.any(self.ids[pos] != ids):
            raise KeyError("some ids are not in the source")
        return self.vectors[pos]
