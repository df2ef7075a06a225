"""Group commit: concurrent writers' prepared batches committed together, one transaction for several.

A small ingest request (a few documents through the API) costs little to embed but a whole duckdb
transaction to commit: the commit's fixed cost (WAL write and sync, index bookkeeping) dominates, and
requests to one collection commit one at a time under its writer lock. A GroupCommit lets the writer that
finds the committer idle commit every batch queued meanwhile in one call, so N concurrent small ingests pay
for one transaction instead of N.

Natural batching, as in `embed_batcher.py`: no timer and no thread. A lone writer commits at once (no added
latency); while one group commits, later writers queue, and the first of them commits the whole queue when
the committer is free. Each writer returns only after its own batch is committed (acknowledged) or failed.

Writers that announce themselves (`writing()`, around preparing and submitting) let the leader gather: while
announced writers have not queued yet, it waits for them, a step at a time, for as long as one arrives each
step (at most `max_gather_s`). Without it a group was cut by whoever arrived first: the documents of
one embedding pass are released together, but their threads reach the committer one after another, so the
first committed alone and the rest as a second group. `ragsvc bench load` (32 clients, 80/20 search/ingest, a
2-core Zen 4; two runs each, in turn with the code before): an ingest 2.60-2.77 -> 2.27-2.39 searches of server
CPU, search throughput under the mix 0.621-0.634 -> 0.656-0.667 of search-only; a trial build that counted
groups had 3.1 documents a group before and 5.7 after. A lone writer never waits (no other writer is on its
way), and writers that do not announce themselves (a bulk load calls `commit_group` itself) are not waited for.

All-or-nothing per request still holds: when a group fails, each of its batches is committed again on its
own, so one bad batch fails only its own writer, and the others are written as if they had come alone.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")

MAX_GROUP = 64
"""Batches one transaction takes at most: bounds a transaction's size and the wait of the batches in it."""
GATHER_STEP_S = 0.002
"""How long a leader waits for the next announced writer before committing what it has. The threads an
embedding pass releases arrive within a few milliseconds of each other, and a one-document commit itself
takes ~5 ms of CPU. In a trial build under `bench load`, a 0.3 ms step (3 ms bound, two runs) gave groups of
4.7 documents, 2 ms (20 ms bound, one run) 5.7, and 5 ms (50 ms bound, one run) 5.8."""
MAX_GATHER_S = 0.02
"""The longest a leader gathers, however steadily writers keep arriving."""


@dataclass
class _Waiting(Generic[T]):
    item: T
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class GroupCommit(Generic[T]):
    """Commits items through `commit(items)` (one transaction for all of them; its result is not used),
    grouping concurrent callers."""

    def __init__(self, commit: Callable[[Sequence[T]], object], *, max_group: int = MAX_GROUP,
                 gather_step_s: float = GATHER_STEP_S, max_gather_s: float = MAX_GATHER_S) -> None:
        if max_group < 1:
            raise ValueError(f"max_group must be at least 1, got {max_group}")
        if gather_step_s < 0 or max_gather_s < 0:
            raise ValueError(f"gather times must be 0 or more, got {gather_step_s} and {max_gather_s}")
        self._commit = commit
        self.max_group = max_group
        self.gather_step_s = gather_step_s
        self.max_gather_s = max_gather_s
        self._lock = threading.Lock()
        self._queue: list[_Waiting[T]] = []
        self._busy = False
        self._free = threading.Condition(self._lock)
        self._arrived = threading.Condition(self._lock)  # the gathering leader's: a writer queued or gave up
        self._on_way = 0  # announced writers not queued yet (`writing`)
        self.num_commits = 0
        """Transactions run so far (a group counts once): what the grouping saves shows here."""
        self.num_committed = 0
        """Items committed so far in groups (`num_committed / num_commits` is the mean group)."""
        self.num_gathers = 0
        """Groups whose leader waited for announced writers before committing."""

    @contextmanager
    def writing(self) -> Iterator[Callable[[T], None]]:
        """Announce the caller as a writer on its way (it prepares a batch, then submits it through the callable
        this yields), so a leader that commits meanwhile may wait for its batch (see the module's docstring).
        Leaving the block without submitting withdraws the announcement."""
        with self._lock:
            self._on_way += 1
        announced = True

        def submit(item: T) -> None:
            nonlocal announced
            was, announced = announced, False
            self._submit(item, announced=was)

        try:
            yield submit
        finally:
            if announced:
                with self._lock:
                    self._on_way -= 1
                    self._arrived.notify()  # a leader waiting for this writer must not wait out its step

    def submit(self, item: T) -> None:
        """Commit `item`, with whatever else is queued meanwhile; returns once it is committed, raises its error."""
        self._submit(item, announced=False)

    def _submit(self, item: T, *, announced: bool) -> None:
        mine = _Waiting(item)
        with self._lock:
            self._queue.append(mine)
            if announced:
                self._on_way -= 1
            self._arrived.notify()
        while True:
            with self._lock:
                while self._busy and not mine.done.is_set():
                    self._free.wait()  # woken when a group finishes: mine is done then, or someone must lead
                if mine.done.is_set():
                    break
                self._busy = True
                self._gather()
                group, self._queue = self._queue[: self.max_group], self._queue[self.max_group :]
            try:
                self._run(group)
            finally:
                with self._lock:
                    self._busy = False
                    self._free.notify_all()
        if mine.error is not None:
            raise mine.error

    def _gather(self) -> None:
        """As the leader (lock held, committer busy): wait while announced writers are on their way and each
        step brings one (or a withdrawal), up to `max_gather_s`."""
        if not self.gather_step_s or not self.max_gather_s or not self._expecting():
            return
        self.num_gathers += 1
        deadline = time.monotonic() + self.max_gather_s
        while self._expecting():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._arrived.wait(min(self.gather_step_s, remaining)):
                return  # a step went by with nobody arriving, or the bound is reached

    def _expecting(self) -> bool:
        return self._on_way > 0 and len(self._queue) < self.max_group

    def _run(self, group: list[_Waiting[T]]) -> None:
        """Commit the group in one call; if that fails and there are several, each on its own."""
        try:
            self._commit([w.item for w in group])
            self.num_commits += 1
            self.num_committed += len(group)
        except BaseException as exc:
            if len(group) == 1 or not isinstance(exc, Exception):  # an interrupt is no batch's fault: all fail
                for waiting in group:
                    waiting.error = exc
            else:
                for waiting in group:
                    try:
                        self._commit([waiting.item])
                        self.num_commits += 1
                        self.num_committed += 1
                    except BaseException as alone:
                        waiting.error = alone
        for waiting in group:
            waiting.done.set()
