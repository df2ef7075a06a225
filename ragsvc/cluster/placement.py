"""Which Ray cluster to use, and the bounds of a fan-out deadline: plain, validated settings, no Ray import.

`ClusterAddress` is `RAGSVC_CLUSTER__ADDRESS`: `local` starts a Ray instance in this process, `auto` joins the
one a `ray start` on this machine runs, `ray://host:port` joins a remote head through Ray Client. A
collection's `Placement` (in_process or ray, replicas, spread) is part of its IndexSpec and lives in the
index layer (ragsvc.index.placement); it is re-exported here for the cluster code that acts on it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from ragsvc.errors import InvalidInput
from ragsvc.index.placement import MAX_REPLICAS, Placement, PlacementMode, Spread

DEFAULT_DEADLINE_MS = 2000.0
"""How long a search waits for the shards when neither the request nor RAGSVC_CLUSTER__DEADLINE_MS says."""
_RAY_URL = re.compile(r"^ray://[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")


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


__all__ = ["DEFAULT_DEADLINE_MS", "MAX_REPLICAS", "ClusterAddress", "Placement", "PlacementMode", "Spread",
           "check_deadline_ms"]
