"""Where a collection's shards run, and which Ray cluster to use: plain, validated settings, no Ray import.

`Placement` is per collection: `in_process` (the default: a `ShardedIndex` of threads in the API process) or
`ray` (each shard is `replicas` actors). Replicas of one shard go to different nodes under `spread="strict"`
(pinned round-robin, refused when the cluster has fewer nodes than replicas, since two copies on one node
survive a crashed process but not a lost node); `spread="soft"` uses Ray's SPREAD strategy and accepts
co-location, which is what a one-machine cluster (tests, benchmarks, a laptop) needs.

`ClusterAddress` is `RAGSVC_CLUSTER__ADDRESS`: `local` starts a Ray instance in this process, `auto` joins the
one a `ray start` on this machine runs, `ray://host:port` joins a remote head through Ray Client.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from ragsvc.errors import InvalidInput

PlacementMode = Literal["in_process", "ray"]
Spread = Literal["strict", "soft"]
MAX_REPLICAS = 16
MAX_SHARDS = 256
_RAY_URL = re.compile(r"^ray://[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")


@dataclass(frozen=True, slots=True)
class Placement:
    """How one collection's shards are hosted. Derived like the index: changing it re-places, never loses data."""

    mode: PlacementMode = "in_process"
    shards: int = 1
    """Shards by hash of chunk id; each is searched by one of its replicas and the answers merged exactly."""
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
        _check("shards", self.shards, 1, MAX_SHARDS)
        _check("replicas", self.replicas, 1, MAX_REPLICAS)
        if self.mode == "in_process" and self.replicas != 1:
            raise InvalidInput("replicas apply to placement mode ray; set mode to ray or replicas to 1",
                               detail={"param": "placement.replicas"})
        if self.spread not in ("strict", "soft"):
            raise InvalidInput(f"placement spread {self.spread!r} is unknown; use strict or soft",
                               detail={"param": "placement.spread"})
        if not 0.0 <= self.cpus_per_replica <= 64.0:
            raise InvalidInput(f"cpus_per_replica must be between 0 and 64, got {self.cpus_per_replica}",
                               detail={"param": "placement.cpus_per_replica"})

    def check_nodes(self, num_nodes: int) -> None:
        """Refuse a strict spread that asks for more replicas than the cluster has alive nodes."""
        if self.spread == "strict" and self.replicas > num_nodes:
            raise InvalidInput(
                f"placement asks for {self.replicas} replicas of each shard on distinct nodes, but the cluster has "
                f"{num_nodes} alive node(s); lower replicas to at most {num_nodes}, add nodes, or set spread "
                "to soft to allow replicas on one node", detail={"param": "placement.replicas"})


@dataclass(frozen=True, slots=True)
class ClusterAddress:
    """A validated RAGSVC_CLUSTER__ADDRESS; `value` is what `ray.init(address=...)` receives (None: local)."""

    kind: Literal["local", "auto", "client"]
    value: str | None

    @classmethod
    def parse(cls, text: str) -> ClusterAddress:
        text = text.strip()
        if text == "local":
            return cls("local", None)
        if text == "auto":
            return cls("auto", "auto")
        if _RAY_URL.match(text):
            return cls("client", text)
        raise InvalidInput(f"cluster address {text!r} is not one of: local (start Ray here), auto (join the "
                           "cluster `ray start` runs on this machine), ray://host:port (join a remote head); "
                           "set RAGSVC_CLUSTER__ADDRESS to one of them", detail={"param": "cluster.address"})


def check_deadline_ms(deadline_ms: float) -> float:
    """A per-request fan-out deadline must leave the shards some time: (0, 600000] ms."""
    if not 0 < deadline_ms <= 600_000:
        raise InvalidInput(f"deadline_ms must be above 0 and at most 600000, got {deadline_ms}; a search needs "
                           "time to reach its shards (send e.g. 1000)", detail={"param": "deadline_ms"})
    return float(deadline_ms)


def _check(name: str, value: int, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(f"placement {name} must be an integer between {low} and {high}, got {value!r}",
                           detail={"param": f"placement.{name}"})
