"""Where a collection's shards run: a plain, validated part of its IndexSpec (no Ray import here).

`in_process` (the default) keeps the shards as a `ShardedIndex` in the API process. `ray` hosts each of the
spec's `num_shards` shards as `replicas` Ray actors (see ragsvc.cluster). The shard count is the spec's own
`num_shards`, never a second number here, so the two cannot disagree. Replicas of one shard go to different
nodes under `spread="strict"` (pinned round-robin, refused when the cluster has fewer nodes than replicas,
since two copies on one node survive a crashed process but not a lost node); `spread="soft"` uses Ray's
SPREAD strategy and accepts co-location, which is what a one-machine cluster (tests, a laptop) needs.

Placement changes no file an in-process index writes, so the index manifest ignores it (collection_files.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from ragsvc.errors import InvalidInput

PlacementMode = Literal["in_process", "ray"]
Spread = Literal["strict", "soft"]
MAX_REPLICAS = 16
MAX_CPUS_PER_REPLICA = 64.0


@dataclass(frozen=True, slots=True)
class Placement:
    """How one collection's shards are hosted. Derived like the index: changing it re-places, never loses data."""

    mode: PlacementMode = "in_process"
    """in_process: threads in the API process; ray: actors on the cluster RAGSVC_CLUSTER__ADDRESS names."""
    replicas: int = 1
    """Actors holding each shard: a search that a replica misses (dead, restarting, late) goes to the next."""
    spread: Spread = "strict"
    """strict: replicas of a shard on distinct nodes, refused if there are too few; soft: Ray's SPREAD."""
    cpus_per_replica: float = 0.0
    """CPUs Ray reserves for each actor; 0 lets actors share cores (searches release the GIL in the library)."""

    def __post_init__(self) -> None:
        if self.mode not in ("in_process", "ray"):
            raise InvalidInput(f"placement mode {self.mode!r} is unknown; use in_process or ray",
                               detail={"param": "placement.mode"})
        if isinstance(self.replicas, bool) or not isinstance(self.replicas, int) \
                or not 1 <= self.replicas <= MAX_REPLICAS:
            raise InvalidInput(f"placement replicas must be an integer between 1 and {MAX_REPLICAS}, got "
                               f"{self.replicas!r}", detail={"param": "placement.replicas"})
        if self.mode == "in_process" and self.replicas != 1:
            raise InvalidInput("replicas apply to placement mode ray; set mode to ray or replicas to 1",
                               detail={"param": "placement.replicas"})
        if self.spread not in ("strict", "soft"):
            raise InvalidInput(f"placement spread {self.spread!r} is unknown; use strict or soft",
                               detail={"param": "placement.spread"})
        if isinstance(self.cpus_per_replica, bool) or not isinstance(self.cpus_per_replica, (int, float)) \
                or not 0.0 <= self.cpus_per_replica <= MAX_CPUS_PER_REPLICA:
            raise InvalidInput(f"placement cpus_per_replica must be between 0 and {MAX_CPUS_PER_REPLICA:g}, got "
                               f"{self.cpus_per_replica!r}", detail={"param": "placement.cpus_per_replica"})

    def check_nodes(self, num_nodes: int) -> None:
        """Refuse a strict spread that asks for more replicas than the cluster has alive nodes."""
        if self.spread == "strict" and self.replicas > num_nodes:
            raise InvalidInput(
                f"placement asks for {self.replicas} replicas of each shard on distinct nodes, but the cluster has "
                f"{num_nodes} alive node(s); lower replicas to at most {num_nodes}, add nodes, or set spread "
                "to soft to allow replicas on one node", detail={"param": "placement.replicas"})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Placement:
        """From JSON (the catalog, a request): unknown keys are refused, naming the one that sets shards."""
        if isinstance(data, Placement):
            return data
        if not isinstance(data, dict):
            raise InvalidInput(f"placement must be an object such as {{\"mode\": \"ray\", \"replicas\": 2}}, got "
                               f"{type(data).__name__}", detail={"param": "placement"})
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            hint = "; the shard count is the index's num_shards" if "shards" in unknown else ""
            raise InvalidInput(f"unknown placement setting(s) {unknown}{hint}; known: mode, replicas, spread, "
                               "cpus_per_replica", detail={"param": "placement"})
        return cls(**data)


__all__ = ["MAX_REPLICAS", "Placement", "PlacementMode", "Spread"]
