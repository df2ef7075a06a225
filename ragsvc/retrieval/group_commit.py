"""Group commit: concurrent writers' prepared batches committed together, one transaction for several.

A small ingest request (a few documents through the API) costs little to embed but a whole duckdb
transaction to commit: the commit's fixed cost (WAL write and sync, index bookkeeping) dominates, and
requests to one collection commit one at a time under its writer lock. A GroupCommit lets the writer that
finds the committer idle commit every batch queued meanwhile in one call, so N concurrent small ingests pay
for one transaction instead of N.

Natural batching, as in `embed_batcher.py`: no timer and no thread. A lone writer commits at once (no added
latency); while one group commits, later writers queue, and the first of them commits the whole queue when
the committer is free. Each writer returns only after its own batch is committed (acknowledged) or failed.

All-or-nothing per request still holds: when a group fails, each of its batches is committed again on its
own, so one bad batch fails only its own writer, and the others are written as if they had come alone.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")

MAX_GROUP = 64
"""Batches one transaction takes at most: bounds a transaction's size and the wait of the batches in it."""


@dataclass
class _Waiting(Generic[T]):
    item: T
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class GroupCommit(Generic[T]):
    """Commits items through `commit(items)` (one transaction for all of them; its result is not used),
    grouping concurrent callers."""

    def __init__(self, commit: Callable[[Sequence[T]], object], *, max_group: int = MAX_GROUP) -> None:
        if max_group < 1:
            raise ValueError(f"max_group must be at least 1, got {max_group}")
        self._commit = commit
        self.max_group = max_group
        self._lock = threading.Lock()
        self._queue: list[_Waiting[T]] = []
        self._busy = False
        self._free = threading.Condition(self._lock)
        self.num_commits = 0
        """Transactions run so far (a group counts once): what the grouping saves shows here."""

    def submit(self, item: T) -> None:
        """Commit `item`, with whatever else is queued meanwhile; returns once it is committed, raises its error."""
        mine = _Waiting(item)
        with self._lock:
            self._queue.append(mine)
        while True:
            with self._lock:
                while self._busy and not mine.done.is_set():
                    self._free.wait()  # woken when a group finishes: mine is done then, or someone must lead
                if mine.done.is_set():
                    break
                self._busy = True
                group, self._queue = self._queue[: self.max_group], self._queue[self.max_group :]
            try:
                self._run(group)
            finally:
                with self._lock:
                    self._busy = False
                    self._free.notify_all()
        if mine.error is not None:
            raise mine.error

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
