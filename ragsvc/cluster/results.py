"""What a search through Ray shard actors returns: the merged hits plus how complete they are."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class ClusterHits:
    """Merged top-k, ids int64 (q, k) and scores float32 (q, k) like `ShardHits`, -1 / -inf padded.

    `partial` is true when some shard had no replica answer (dead, restarting, behind the catalog, or past
    the deadline): its hits are missing from the merge and `missing_shards` names it. A partial answer is
    only ever returned to a caller that asked for one (`allow_partial`); otherwise the search fails.
    """

    ids: np.ndarray
    scores: np.ndarray
    partial: bool
    missing_shards: tuple[str, ...]
    replicas: tuple[int, ...]
    """Which replica answered each shard, in shard order; -1 for a missing shard."""
    fanout_ms: float
    """Wall time from the first request sent to the last answer used (the merge excluded)."""


__all__ = ["ClusterHits"]
