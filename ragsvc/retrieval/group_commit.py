"""Group commit: concurrent writers' prepared batches committed together, one transaction for several.

A small ingest request (a few documents through the API) costs little to embed but a whole duckdb
transaction to commit: the commit's fixed cost (WAL write and sync, index bookkeeping) dominates, and
requests to one collection commit one at a time under its writer lock. A GroupCommit lets the writer that
finds the committer idle commit every batch queued meanwhile in one call, so N concurrent small ingests pay
for one transaction instead of N.

Natural batching, as in `embed_batcher.py`: no timer and no thread. A lone writer commits at once (no added
latency); while one group commits, later writers queue, and the first of them commits the whole queue when
the committer is free. Each writer returns only after its own batch is committed (acknowledged) or failed.

Writers whose batches are known to be on their way can say so (`announce`, then `submit(..., announced=True)`
or `withdraw`): a leader that finds announced batches not yet queued waits for them, at most `max_linger_s`,
before it commits (PostgreSQL's commit_delay with commit_siblings, with a count instead of a guess). The
store announces an ingest when its embedding pass ends, and one pass embeds every ingest text that queued
for it, so the requests of one pass reach the committer together, a few hundred microseconds apart: without
the wait the first would commit alone and the rest in a second transaction.

All-or-nothing per request still holds: when a group fails, each of its batches is committed again on its
own, so one bad batch fails only its own writer, and the others are written as if they had come alone.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")

MAX_GROUP = 64
"""Batches one transaction takes at most: bounds a transaction's size and the wait of the batches in it."""
MAX_LINGER_S = 0.005
"""The longest a leader waits for announced batches: a bound for a writer that announced and then stalled."""


@dataclass
class _Waiting(Generic[T]):
    item: T
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class GroupCommit(Generic[T]):
    """Commits items through `commit(items)` (one transaction for all of them; its result is not used),
    grouping concurrent callers."""

    def __init__(self, commit: Callable[[Sequence[T]], object], *, max_group: int = MAX_GROUP,
                 max_linger_s: float = MAX_LINGER_S) -> None:
        if max_group < 1 or max_linger_s < 0:
            raise ValueError(f"max_group must be at least 1 and max_linger_s at least 0, got {max_group} and "
                             f"{max_linger_s}")
        self._commit = commit
        self.max_group = max_group
        self.max_linger_s = max_linger_s
        self._lock = threading.Lock()
        self._queue: list[_Waiting[T]] = []
        self._busy = False
        self._announced = 0  # batches said to be on their way, not queued yet
        self._free = threading.Condition(self._lock)
        self._arrived = threading.Condition(self._lock)  # a lingering leader waits here for announced batches
        self.num_commits = 0
        """Transactions run so far (a group counts once): what the grouping saves shows here."""

    def announce(self) -> None:
        """A batch of this caller will be submitted shortly (`submit(..., announced=True)`) or withdrawn."""
        with self._lock:
            self._announced += 1

    def withdraw(self) -> None:
        """An announced batch will not come after all."""
        with self._lock:
            self._announced -= 1
            self._arrived.notify_all()

    def submit(self, item: T, *, announced: bool = False) -> None:
        """Commit `item`, with whatever else is queued meanwhile; returns once it is committed, raises its error."""
        mine = _Waiting(item)
        with self._lock:
            self._queue.append(mine)
            if announced:
                self._announced -= 1
            self._arrived.notify_all()
        while True:
            with self._lock:
                while self._busy and not mine.done.is_set():
                    self._free.wait()  # woken when a group finishes: mine is done then, or someone must lead
                if mine.done.is_set():
                    break
                self._busy = True
                self._linger()
                group, self._queue = self._queue[: self.max_group], self._queue[self.max_group :]
            try:
                self._run(group)
            finally:
                with self._lock:
                    self._busy = False
                    self._free.notify_all()
        if mine.error is not None:
            raise mine.error

    def _linger(self) -> None:
        """As the leader (lock held): wait for announced batches to queue, up to max_linger_s in all."""
        deadline = time.monotonic() + self.max_linger_s
        while self._announced > 0 and len(self._queue) < self.max_group:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._arrived.wait(remaining)

    def _run(self, group: list[_Waiting[T]]) -> None:
        """Commit the group in one call; if that fails and there are several, each on its own."""
        try:
            self._commit([w.item for w in group])
            self.num_commits += 1
        except BaseException as exc:
            if len(group) == 1 or not isinstance(exc, Exception):  # an interrupt is no batch's fault: all fail
                for waiting in group:
                    waiting.error = exc
            else:
                for waiting in group:
                    try:
                        self._commit([waiting.item])
                        self.num_commits += 1
                    except BaseException as alone:
                        waiting.error = alone
        for waiting in group:
            waiting.done.set()
