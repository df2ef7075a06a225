"""Bringing one shard replica level with the catalog: replay the rows above its watermark, drop deleted ids.

The catalog (duckdb) has one writer, the API process, so replicas never read it themselves: the writer reads
the rows this replica's shard owns above the replica's watermark and sends them in batches, then compares the
replica's live ids with the catalog's and deletes the difference (deletes do not move watermarks, so a
replica that missed one is only found by this comparison). Rows pass through `transform` first when the
index stores something derived from the catalog's vectors (a rotated Matryoshka prefix).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ragsvc.index.sharded_index import shard_of
from ragsvc.index.source import VectorSource

logger = logging.getLogger(__name__)

Transform = Callable[[np.ndarray], np.ndarray]
PING_TIMEOUT_S = 2.0
CALL_TIMEOUT_S = 120.0
REPLAY_BATCH = 8192


@dataclass(frozen=True, slots=True)
class CatchUp:
    shard: int
    num_shards: int
    dim: int
    watermark: int
    """The index's committed watermark: what the replica must cover when done."""
    name: str


def replica_is_current(host: Any, watermark: int) -> bool:
    """Whether the actor answers a ping within PING_TIMEOUT_S with a watermark at least `watermark`."""
    import ray
    from ray.exceptions import GetTimeoutError, RayError

    try:
        return int(ray.get(host.ping.remote(), timeout=PING_TIMEOUT_S)) >= watermark
    except (GetTimeoutError, RayError):
        return False


def catch_up(host: Any, job: CatchUp, source: VectorSource, transform: Transform | None) -> bool:
    """Replay and reconcile one replica; False (and nothing assumed) when it does not answer."""
    import ray
    from ray.exceptions import GetTimeoutError, RayError

    try:
        mark = int(ray.get(host.ping.remote(), timeout=PING_TIMEOUT_S))
        replayed = 0
        for ids, vectors in _rows_of(job, source, transform, after_id=mark):
            ray.get(host.replay.remote(ids, vectors, new=mark), timeout=CALL_TIMEOUT_S)
            replayed += len(ids)
        none = np.zeros(0, np.int64), np.zeros((0, job.dim), np.float32)
        ray.get(host.replay.remote(*none, new=job.watermark), timeout=CALL_TIMEOUT_S)
        live = np.asarray(ray.get(host.live_ids.remote(), timeout=CALL_TIMEOUT_S), np.int64)
        gone = np.setdiff1d(live, _catalog_ids(job, source))
        if len(gone):
            ray.get(host.delete.remote(gone, base=job.watermark), timeout=CALL_TIMEOUT_S)
    except (GetTimeoutError, RayError) as exc:
        logger.info("%s replica is not reachable yet (%s); it stays out of searches", job.name, type(exc).__name__)
        return False
    logger.info("%s replica caught up from watermark %d to %d: %d rows replayed, %d deletes", job.name, mark,
                job.watermark, replayed, len(gone))
    return True


def _rows_of(job: CatchUp, source: VectorSource, transform: Transform | None, *,
             after_id: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for ids, vectors in source.iter_vectors(after_id=after_id, batch_size=REPLAY_BATCH):
        keep = shard_of(ids, job.num_shards) == job.shard
        if np.any(keep):
            rows = vectors[keep] if transform is None else transform(vectors[keep])
            yield ids[keep], np.ascontiguousarray(rows[:, : job.dim], dtype=np.float32)


def _catalog_ids(job: CatchUp, source: VectorSource) -> np.ndarray:
    found = [ids[shard_of(ids, job.num_shards) == job.shard] for ids, _ in source.iter_vectors(after_id=0)]
    return np.concatenate(found) if found else np.zeros(0, np.int64)
