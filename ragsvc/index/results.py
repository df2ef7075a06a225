"""What the index layer's searches return: named arrays instead of tuples whose order differed by caller.

`ShardHits` is the answer of a Shard (and of a ShardedIndex, which merges them) for a batch of queries;
`IndexResult` is a CollectionIndex's answer for one query, with the stage timings and the `ServedBy` record
of which structure answered. Both are frozen and slotted: they are built once per search on the hot path
and only read after that.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ragsvc.types import ServedBy


@dataclass(frozen=True, slots=True)
class ShardHits:
    """Top-k of a batch of queries, best first in each row: ids int64 (q, k) and scores float32 (q, k).

    Higher scores are better. From `Shard.search` rows are exactly k wide, right-padded with id -1 and score
    -inf when fewer than k vectors exist or pass the filter (as faiss pads).
    """

    ids: np.ndarray
    scores: np.ndarray


@dataclass(frozen=True, slots=True)
class IndexResult:
    """One query's answer from a CollectionIndex: ids int64 (m,) and scores float32 (m,), best first, m <= k
    (no padding), the wall time of each index stage in milliseconds, and which structure answered."""

    ids: np.ndarray
    scores: np.ndarray
    timings_ms: dict[str, float]
    served_by: ServedBy


__all__ = ["IndexResult", "ShardHits"]
