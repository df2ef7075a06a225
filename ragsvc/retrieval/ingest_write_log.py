"""Which documents of a collection recent commits wrote, so a commit can trust what its prepare read.

A write reads the stored content hashes of its documents twice: while preparing (to skip unchanged
documents before embedding them) and again under the collection's writer lock (exact: to replace the right
documents and skip any that another request stored meanwhile). The second read is a catalog statement per
commit, and it only differs from the first when some commit in between wrote one of the same ids. The log
answers that without the catalog: each commit (and delete) records the ids it wrote under a new generation,
and a batch notes the generation before its prepare read; if no entry after that generation names one of its
ids, the prepare read is still exact.

Bounded: the last `MAX_ENTRIES` commits. A batch prepared before the oldest kept entry, or before the
collection was deleted (`forget`), gets "unknown" and its commit reads again, as before. Generations are
read before the prepare's catalog read and recorded after the commit, so a race can only make the answer
"changed" (a read too many), never "unchanged" wrongly.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Sequence

MAX_ENTRIES = 4096
"""Commits remembered per collection: a batch waits for far fewer between its prepare and its commit."""


class WriteLog:
    def __init__(self, *, max_entries: int = MAX_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self._lock = threading.Lock()
        self._generation = 0
        self._floor = 0  # what happened at or before this generation is not known
        self._entries: deque[tuple[int, frozenset[str]]] = deque(maxlen=max_entries)

    def generation(self) -> int:
        """The generation now: read it before reading stored state that `unchanged_since` will vouch for."""
        with self._lock:
            return self._generation

    def record(self, ids: Iterable[str]) -> None:
        """A commit that wrote (inserted, replaced or deleted) the documents `ids`: call after it committed."""
        with self._lock:
            self._generation += 1
            if len(self._entries) == self._entries.maxlen:
                self._floor = self._entries[0][0]  # about to fall off: its generation becomes unknown
            self._entries.append((self._generation, frozenset(ids)))

    def forget(self) -> None:
        """Everything before now is unknown (the collection was deleted: any stored state read before is gone)."""
        with self._lock:
            self._generation += 1
            self._floor = self._generation
            self._entries.clear()

    def unchanged_since(self, generation: int, ids: Sequence[str]) -> bool:
        """True when no commit after `generation` wrote any of `ids` (and the log reaches back that far)."""
        with self._lock:
            if generation < self._floor:
                return False
            wanted = set(ids)
            for gen, written in reversed(self._entries):  # newest first: stop at the batch's generation
                if gen <= generation:
                    return True
                if not wanted.isdisjoint(written):
                    return False
            return True
