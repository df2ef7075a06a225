"""A bounded in-memory map in front of catalog reads that must never serve what a committed change removed.

A search reads two things from the catalog besides its index: the collection's record (embedder, width,
index spec) and the rows of its hits (document id, text, metadata). Both change rarely and only through this
process (duckdb lets one process write a catalog file), yet each read is a statement whose fixed cost is
several times an HNSW lookup. So the catalog keeps what it read here and drops it when it changes it.

The hazard is a read racing a change: a reader takes a snapshot, the writer commits and drops the key, then
the reader stores its now stale row. Every fill therefore carries the `generation` read before the statement
ran; any invalidation bumps the generation, and a fill that began before it is dropped instead of stored. The
catalog invalidates after its commit, so a reader either started after the commit (its statement sees the
change) or its fill is refused. Values are immutable (frozen records, or raw JSON text parsed per use), so
callers cannot change what others read.

Least recently used entries go first once `max_items` is reached, or `max_bytes` when the cache is given a
size for its values (hits' rows carry caller metadata of up to tens of KiB, so a count alone bounds nothing).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ReadCache(Generic[K, V]):
    """Thread-safe LRU of at most `max_items` entries (and `max_bytes` of them by `size`), filled only by reads
    no invalidation overtook."""

    def __init__(self, *, max_items: int, max_bytes: int | None = None, size: Callable[[V], int] | None = None) -> None:
        if max_items < 0:
            raise ValueError(f"max_items must be at least 0, got {max_items}")
        if (max_bytes is None) != (size is None):
            raise ValueError("max_bytes and size go together")
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._size = size
        self._items: OrderedDict[K, V] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._generation = 0

    @property
    def num_bytes(self) -> int:
        """What the entries weigh by `size` (0 without one)."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def generation(self) -> int:
        """Take this before the read whose result will be given to `fill`."""
        with self._lock:
            return self._generation

    def get_many(self, keys: Iterable[K]) -> dict[K, V]:
        """The cached entries among `keys` (most recently used now)."""
        found = {}
        with self._lock:
            for key in keys:
                value = self._items.get(key)
                if value is not None:
                    self._items.move_to_end(key)
                    found[key] = value
        return found

    def get(self, key: K) -> V | None:
        return self.get_many((key,)).get(key)

    def fill(self, entries: Mapping[K, V], *, generation: int) -> bool:
        """Store `entries` read after `generation` was taken; refused (False) if an invalidation came since."""
        with self._lock:
            if generation != self._generation:
                return False
            for key, value in entries.items():
                weight = self._size(value) if self._size is not None else 0
                if self.max_bytes is not None and weight > self.max_bytes:
                    continue  # larger than the whole cache: reads of it go to the catalog
                self._drop(key)
                self._items[key] = value
                self._bytes += weight
            while len(self._items) > self.max_items or (self.max_bytes is not None and self._bytes > self.max_bytes):
                self._drop(next(iter(self._items)))
            return True

    def _drop(self, key: K) -> None:
        value = self._items.pop(key, None)
        if value is not None and self._size is not None:
            self._bytes -= self._size(value)

    def invalidate(self, keys: Iterable[K] | None = None) -> None:
        """Drop `keys` (None: everything) and refuse fills from reads that began before now."""
        with self._lock:
            self._generation += 1
            if keys is None:
                self._items.clear()
                self._bytes = 0
            else:
                for key in keys:
                    self._drop(key)
