"""Token buckets, one per API key (or per client address while keys are off): pure logic and a clock.

A bucket holds up to `burst` tokens and refills at `rate_per_s`; each request takes one. An empty bucket
answers how long until the next token, which the API sends as `Retry-After` with its 429. Buckets are kept in
an LRU of bounded size, so a flood of distinct addresses costs bounded memory (an evicted bucket simply
starts full again, which only ever errs towards letting a request through).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RateLimit:
    rate_per_s: float
    """Sustained requests per second per key; 0 turns rate limiting off."""
    burst: int
    """Requests a key may send at once after being idle."""
    max_buckets: int = 100_000

    @property
    def enabled(self) -> bool:
        return self.rate_per_s > 0


class TokenBuckets:
    """Thread-safe: routes run in the event loop and in the thread pool alike."""

    def __init__(self, limit: RateLimit, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # who -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, who: str) -> float:
        """Take one token for `who`: 0.0 when granted, else the seconds until one is available."""
        if not self.limit.enabled:
            return 0.0
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.pop(who, (float(self.limit.burst), now))
            tokens = min(float(self.limit.burst), tokens + (now - at) * self.limit.rate_per_s)
            granted = tokens >= 1.0
            if granted:
                tokens -= 1.0
            self._buckets[who] = (tokens, now)
            if len(self._buckets) > self.limit.max_buckets:
                self._buckets.popitem(last=False)
        return 0.0 if granted else (1.0 - tokens) / self.limit.rate_per_s


def retry_after_header(wait_s: float) -> str:
    """Retry-After takes whole seconds; round up so a client that obeys it finds a token."""
    return str(max(1, math.ceil(wait_s)))
