"""ShardedIndex: N shards chosen by a stable hash of the chunk id, searched in parallel, merged exactly.

Each shard returns its own top-k, so the union holds the global top-k and the merge is exact with respect to
what the shards return. The hash is splitmix64 (fixed, unlike Python's salted `hash`) so a chunk maps to the
same shard in every process. hnswlib and faiss release the GIL while searching, so a thread pool gives real
parallelism; the pool is created on first use and shut down by `close`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ragsvc.index.results import ShardHits
from ragsvc.index.shard import Shard, as_ids, check_add, check_queries, top_k

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def shard_of(ids: np.ndarray, num_shards: int) -> np.ndarray:
    """Owning shard (int64 (n,)) of each chunk id, by splitmix64 of the id modulo `num_shards`."""
    z = np.asarray(ids, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):  # the hash relies on wrap-around uint64 arithmetic
        z = (z + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        z = z ^ (z >> np.uint64(31))
    return (z % np.uint64(num_shards)).astype(np.int64)


def merge_hits(results: Sequence[ShardHits], k: int) -> ShardHits:
    """The exact merge of shards' top-k lists (each (q, k)) into the global top-k: one list passes unchanged.

    Shared by the in-process `ShardedIndex` and the Ray-hosted one, so both merge identically.
    """
    if len(results) == 1:
        return results[0]
    scores = np.concatenate([r.scores for r in results], axis=1)  # (q, shards * k)
    ids = np.concatenate([r.ids for r in results], axis=1)  # (q, shards * k)
    return top_k(scores, ids, k)


class ShardedIndex:
    def __init__(self, shards: Sequence[Shard], *, max_workers: int | None = None) -> None:
        if not shards:
            raise ValueError("a ShardedIndex needs at least one shard")
        self.shards = list(shards)
        self.dim = self.shards[0].dim
        self._max_workers = max_workers or min(len(self.shards), os.cpu_count() or 1)
        self._pool: ThreadPoolExecutor | None = None

    @classmethod
    def build(cls, make_shard: Callable[[], Shard], num_shards: int) -> ShardedIndex:
        return cls([make_shard() for _ in range(num_shards)])

    def __len__(self) -> int:
        return sum(len(s) for s in self.shards)

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self.shards)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids, vectors = check_add(ids, vectors, self.dim)
        for i, rows in self._route(ids):
            self.shards[i].add(ids[rows], vectors[rows])

    def delete(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        for i, rows in self._route(ids):
            self.shards[i].delete(ids[rows])

    def search(self, queries: np.ndarray, k: int, *, allowed_ids: np.ndarray | None = None,
               ef_search: int | None = None) -> ShardHits:
        """queries (q, dim) -> ids (q, k) and scores (q, k): every shard's top-k, merged exactly."""
        queries = check_queries(queries, self.dim, k)
        allowed = as_ids(allowed_ids)
        if len(self.shards) == 1:
            return self.shards[0].search(queries, k, allowed_ids=allowed, ef_search=ef_search)
        per_shard = self._allowed_per_shard(allowed)

        def one(i: int) -> ShardHits:
            return self.shards[i].search(queries, k, allowed_ids=per_shard[i], ef_search=ef_search)

        return merge_hits(list(self._executor().map(one, range(len(self.shards)))), k)

    def save(self, paths: Sequence[Path]) -> None:
        for shard, path in zip(self.shards, paths, strict=True):
            shard.save(path)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _route(self, ids: np.ndarray) -> list[tuple[int, np.ndarray]]:
        if len(self.shards) == 1:
            return [(0, np.arange(len(ids)))]
        owner = shard_of(ids, len(self.shards))
        return [(i, np.flatnonzero(owner == i)) for i in range(len(self.shards)) if np.any(owner == i)]

    def _allowed_per_shard(self, allowed: np.ndarray | None) -> list[np.ndarray | None]:
        if allowed is None:
            return [None] * len(self.shards)
        owner = shard_of(allowed, len(self.shards))
        return [allowed[owner == i] for i in range(len(self.shards))]

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self._max_workers, thread_name_prefix="shard")
        return self._pool
