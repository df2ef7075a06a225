"""Typed records of `ragsvc bench cluster`: one row per system and shard count, the kill run, the result.

JSON exists only at the file edge: `ClusterBenchResult.to_json` writes it (every field, by name).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class LoadPoint:
    """Searches from `clients` threads at once, one query per call: throughput and per-call latency."""

    clients: int
    num_queries: int
    qps: float
    p50_ms: float
    p99_ms: float


@dataclass(frozen=True, slots=True)
class ClusterRow:
    system: str
    """`in_process` (ShardedIndex, the peer) or `ray` (RayShardedIndex over actors)."""
    shards: int
    replicas: int
    recall_at_10: float
    identical_to_in_process: bool | None
    """ray: every query's ids and scores equal the in-process index's (same shard files); None for the peer."""
    load: tuple[LoadPoint, ...]
    fanout_p50_ms: float | None
    """ray: median time inside the fan-out (send, wait, receive), single client."""
    overhead_p50_ms: float | None
    """ray: median single-client latency minus the in-process median at the same shard count."""
    qps_vs_in_process: tuple[float, ...] | None
    """ray: QPS ratio to the peer at each client count of `load`."""
    index_bytes: int
    start_s: float
    """in_process: build; ray: actors started and their shard files loaded."""


@dataclass(frozen=True, slots=True)
class KillRun:
    """One replica killed (Ray restarts it) while `clients` threads search: what the callers saw."""

    shards: int
    replicas: int
    clients: int
    num_queries: int
    killed_after: int
    """Queries answered before the kill."""
    errors: int
    partial: int
    wrong: int
    """Answers whose ids differ from the in-process index's for that query."""
    before: LoadPoint
    after: LoadPoint
    max_ms_after: float
    recovered_s: float | None
    """From the kill until the restarted replica was caught up and back in rotation; None if not in the run."""


@dataclass(frozen=True, slots=True)
class ClusterBenchResult:
    git_sha: str
    cpu_model: str
    created_unix: int
    machine: dict[str, Any]
    corpus: dict[str, Any]
    spec: dict[str, Any]
    bytes_per_vector: dict[str, float]
    """Index bytes in memory per vector, by layout (see `ragsvc.bench.cluster.bytes_per_vector`)."""
    deadline_ms: float
    hedge_ms: float | None
    rows: tuple[ClusterRow, ...]
    kill: KillRun | None
    notes: tuple[str, ...]
    wall_s: float

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
