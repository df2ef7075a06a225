"""Send one request per shard to Ray actors and collect one good answer per shard before a deadline.

Each shard has an ordered list of replicas to try. The first is asked at once; a replica that fails (its
actor died, is restarting, or its answer is refused by `accept`, e.g. because it is behind the catalog) is
replaced by the next immediately. At `hedge_s` every shard still unanswered is also asked of its next
replica, so one slow actor costs at most the hedge delay rather than the whole deadline; whichever answer
arrives first is used. At the deadline, shards without an answer are reported missing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class FanOut:
    answers: dict[int, tuple[int, Any]] = field(default_factory=dict)
    """shard -> (replica, value) of the answer used."""
    failed: set[tuple[int, int]] = field(default_factory=set)
    """(shard, replica) pairs that raised or whose answer was refused."""
    late: set[tuple[int, int]] = field(default_factory=set)
    """(shard, replica) pairs asked but not answered by the time the fan-out finished."""
    elapsed_ms: float = 0.0


def fan_out(order: Sequence[Sequence[int]], launch: Callable[[int, int], Any],
            accept: Callable[[int, int, Any], bool], *, deadline_s: float, hedge_s: float) -> FanOut:
    """Ask shard s's replicas in `order[s]` via `launch(s, r) -> ObjectRef`; see the module doc."""
    import ray
    from ray.exceptions import RayError

    start = time.monotonic()
    out = FanOut()
    tried = [0] * len(order)
    pending: dict[Any, tuple[int, int]] = {}

    def try_next(s: int) -> None:
        while tried[s] < len(order[s]):
            r = order[s][tried[s]]
            tried[s] += 1
            try:
                pending[launch(s, r)] = (s, r)
                return
            except RayError:
                out.failed.add((s, r))

    for s in range(len(order)):
        try_next(s)
    hedged = False
    while pending and len(out.answers) < len(order):
        now = time.monotonic() - start
        if now >= deadline_s:
            break
        until = deadline_s if hedged else min(hedge_s, deadline_s)
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=max(until - now, 0.0))
        for ref in ready:
            s, r = pending.pop(ref)
            if s in out.answers:
                continue
            try:
                value = ray.get(ref)
            except RayError:
                value, ok = None, False
            else:
                ok = accept(s, r, value)
            if ok:
                out.answers[s] = (r, value)
            else:
                out.failed.add((s, r))
                if not any(ps == s for ps, _ in pending.values()):
                    try_next(s)
        if not hedged and time.monotonic() - start >= hedge_s:
            hedged = True
            for s in range(len(order)):
                if s not in out.answers:
                    try_next(s)
    out.late = set(pending.values()) - {(s, answer[0]) for s, answer in out.answers.items()}
    out.elapsed_ms = (time.monotonic() - start) * 1000.0
    return out
