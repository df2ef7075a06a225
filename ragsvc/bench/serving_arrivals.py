"""When the serving benchmark's requests arrive: closed loop (the default) or an open-loop Poisson process.

Closed loop keeps `concurrency` requests in flight and sends the next one when one ends. That measures
throughput well, but it cannot measure latency under load fairly: at the start every client sends at once, so
the last request of the burst waits behind every prompt of the burst, however the server orders its work.
Open loop is how traffic reaches a service: requests arrive at seeded Poisson times (exponential gaps at
`rate` per second), whether or not the server has kept up, and a request's clock starts at its arrival, so
time spent queued counts in its TTFT. `concurrency` still caps the requests in flight (a client pool of that
many connections): a server that falls behind sees a closed loop at that level, and the queueing shows in TTFT.

Pure arithmetic here; the drivers (`serving_run` for ragsvc, `serving_peers` for llama.cpp) use it.
"""

from __future__ import annotations

import numpy as np

ARRIVAL_SEED_OFFSET = 104_729
"""Added to the run's seed so arrival gaps do not share a random stream with the prompts."""


def arrival_offsets(num_requests: int, rate: float | None, *, seed: int) -> list[float]:
    """Seconds after the level's start at which each request arrives: all 0.0 for closed loop (`rate` None),
    else cumulative exponential gaps with mean 1 / `rate`, the first request at 0."""
    if rate is None:
        return [0.0] * num_requests
    if rate <= 0:
        raise ValueError(f"arrival rate must be positive (requests per second), got {rate}")
    if num_requests == 0:
        return []
    rng = np.random.default_rng(seed + ARRIVAL_SEED_OFFSET)
    gaps = rng.exponential(1.0 / rate, size=num_requests - 1)
    return [0.0, *np.cumsum(gaps).tolist()]
