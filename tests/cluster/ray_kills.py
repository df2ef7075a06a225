"""Killing shard actors in tests so that the next call sees them dead.

`ray.kill` only asks for the kill: a call sent right after it can still reach the old process and be answered
(seen on a loaded 2-core machine), so a test that expects the replica gone must wait until a call fails.
"""

from __future__ import annotations

from typing import Any

CALLS = 200
"""Calls to wait through; each returns as soon as the actor answers or is found dead."""


def kill_for_good(handle: Any) -> None:
    import ray  # here, so that the modules using this can still skip where ray is not installed

    ray.kill(handle, no_restart=True)
    for _ in range(CALLS):
        try:
            ray.get(handle.__ray_call__.remote(lambda host: None), timeout=120)
        except ray.exceptions.ActorDiedError:
            return
        except ray.exceptions.ActorUnavailableError:  # on its way down: ask again
            continue
    raise AssertionError(f"the actor still answered {CALLS} calls after ray.kill")
