"""The Shard protocol every ANN structure implements, and the checks and padding they share.

A shard maps int64 chunk ids to float32 vectors of one width and answers top-k by similarity: higher scores
are better (inner product; for the `l2` metric, the negative squared distance). A search returns `ShardHits`
(ids and scores by name); when fewer than k vectors exist (or pass the filter), rows are padded with id -1
and score -inf, like faiss does. The helpers take (scores, ids) arrays and return ShardHits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from ragsvc.errors import DimensionMismatch, InvalidInput
from ragsvc.index.results import ShardHits

ShardMetric = Literal["ip", "l2"]
PAD_ID = -1


class Shard(Protocol):
    dim: int
    metric: ShardMetric

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Insert or replace: ids int64 (n,), vectors float32 (n, dim)."""
        ...

    def delete(self, ids: np.ndarray) -> None:
        """Remove these ids; ids the shard does not hold are ignored."""
        ...

    def search(self, queries: np.ndarray, k: int, *, allowed_ids: np.ndarray | None = None,
               ef_search: int | None = None) -> ShardHits:
        """queries (q, dim) -> ids int64 (q, k) and scores float32 (q, k), best first, -1 padded.

        `ef_search` overrides the graph's search breadth for this call (graph shards only; others ignore it).
        """
        ...

    def save(self, path: Path) -> None:
        """Write the shard to `path` atomically (native format, no pickle)."""
        ...

    def live_ids(self) -> np.ndarray:
        """Every id the shard holds and has not deleted, int64 (n,), in no particular order."""
        ...

    def __len__(self) -> int: ...

    @property
    def nbytes(self) -> int:
        """Bytes held in memory to answer a query."""
        ...


def check_add(ids: np.ndarray, vectors: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert to the exact layout the native libraries need (contiguous int64 / float32)."""
    ids = np.ascontiguousarray(np.asarray(ids).reshape(-1), dtype=np.int64)
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim == 1 and len(ids) == 1:
        vectors = vectors.reshape(1, -1)
    if vectors.ndim != 2:
        raise InvalidInput(f"vectors must be a 2-D array (n, {dim}), got shape {vectors.shape}")
    if vectors.shape[1] != dim:
        raise DimensionMismatch(f"vectors have {vectors.shape[1]} dimensions; this index holds {dim}")
    if vectors.shape[0] != len(ids):
        raise InvalidInput(f"got {len(ids)} ids for {vectors.shape[0]} vectors; pass one id per vector")
    if len(ids) and ids.min() < 0:
        raise InvalidInput("ids must be non-negative (-1 marks padding in results)")
    if len(np.unique(ids)) != len(ids):
        raise InvalidInput("ids in one add call must be unique")
    if not np.all(np.isfinite(vectors)):
        raise InvalidInput("vectors contain NaN or infinity; send finite numbers")
    return ids, np.ascontiguousarray(vectors)


def check_queries(queries: np.ndarray, dim: int, k: int) -> np.ndarray:
    if (isinstance(queries, np.ndarray) and queries.dtype == np.float32 and queries.ndim == 2
            and queries.shape[1] == dim and queries.flags.c_contiguous and k >= 1):
        return queries  # the per-query hot path: nothing to convert
    queries = np.asarray(queries, dtype=np.float32)
    if queries.ndim == 1:
        queries = queries.reshape(1, -1)
    if queries.ndim != 2 or queries.shape[1] != dim:
        raise DimensionMismatch(f"query has {queries.shape[-1]} dimensions; this index holds {dim}")
    if k < 1:
        raise InvalidInput(f"k must be at least 1, got {k}")
    return np.ascontiguousarray(queries)


def as_ids(ids: np.ndarray | None) -> np.ndarray | None:
    if ids is None:
        return None
    return np.unique(np.asarray(ids, dtype=np.int64).reshape(-1))


def pad(scores: np.ndarray, ids: np.ndarray, k: int) -> ShardHits:
    """Right-pad (q, m) results to (q, k) with score -inf and id -1 (or cut them to k)."""
    q, m = ids.shape
    if m >= k:
        return ShardHits(ids[:, :k].astype(np.int64, copy=False), scores[:, :k].astype(np.float32, copy=False))
    out_scores = np.full((q, k), -np.inf, dtype=np.float32)  # (q, k)
    out_ids = np.full((q, k), PAD_ID, dtype=np.int64)  # (q, k)
    out_scores[:, :m] = scores
    out_ids[:, :m] = ids
    return ShardHits(out_ids, out_scores)


def top_k(scores: np.ndarray, ids: np.ndarray, k: int) -> ShardHits:
    """Best k per row of (q, m) candidates, ties broken by smaller id so results are deterministic."""
    q, m = scores.shape
    if m == 0:
        return pad(np.zeros((q, 0), np.float32), np.zeros((q, 0), np.int64), k)
    safe = np.where(ids == PAD_ID, -np.inf, scores)
    if m > max(4 * k, 512):  # partition first: a full sort of a large scan would dominate the search
        return _top_k_partitioned(safe, ids, k)
    order = np.lexsort((ids, -safe), axis=1)[:, :k]  # (q, min(k, m)): primary key score desc, then id asc
    return _picked(np.take_along_axis(safe, order, axis=1), np.take_along_axis(ids, order, axis=1), k)


def top_k_row(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best k of one query's candidates (ids (m,), scores (m,)) -> (ids (<=k,), scores (<=k,)), no padding.

    The per-query hot path of a CollectionIndex search, so it skips the 2-D machinery of `top_k`.
    """
    if len(scores) > max(4 * k, 512):
        kth = np.partition(scores, len(scores) - k)[len(scores) - k]
        keep = np.flatnonzero(scores >= kth)  # ties with the k-th stay in, so ties break by id below
        scores, ids = scores[keep], ids[keep]
    order = np.lexsort((ids, -scores))[:k]
    return ids[order].astype(np.int64, copy=False), scores[order].astype(np.float32, copy=False)


def _top_k_partitioned(safe: np.ndarray, ids: np.ndarray, k: int) -> ShardHits:
    rows_scores, rows_ids = [], []
    for row_scores, row_ids in zip(safe, ids, strict=True):
        kth = np.partition(row_scores, len(row_scores) - k)[len(row_scores) - k]
        keep = np.flatnonzero(row_scores >= kth)  # everything tied with the k-th too, so ties break by id
        order = np.lexsort((row_ids[keep], -row_scores[keep]))[:k]
        rows_scores.append(row_scores[keep][order])
        rows_ids.append(row_ids[keep][order])
    return _picked(np.stack(rows_scores), np.stack(rows_ids), k)


def _picked(scores: np.ndarray, ids: np.ndarray, k: int) -> ShardHits:
    return pad(scores, np.where(np.isneginf(scores), PAD_ID, ids), k)


def exact_scores(queries: np.ndarray, vectors: np.ndarray, metric: ShardMetric) -> np.ndarray:
    """queries (q, d), vectors (n, d) -> similarity (q, n): inner product or negative squared L2."""
    ip = queries @ vectors.T  # (q, n)
    if metric == "ip":
        return ip
    q_sq = np.einsum("qd,qd->q", queries, queries)[:, None]  # (q, 1)
    v_sq = np.einsum("nd,nd->n", vectors, vectors)[None, :]  # (1, n)
    return -(q_sq - 2.0 * ip + v_sq)
