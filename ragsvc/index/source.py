"""What an index needs from the catalog to replay or rebuild itself: the vectors, in chunk-id order."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import numpy as np


class VectorSource(Protocol):
    """Read side of the store for one collection. Implemented by `ragsvc.store.Catalog`'s collection view."""

    def max_chunk_id(self) -> int:
        """Highest chunk id stored for the collection (0 when empty)."""
        ...

    def count(self) -> int:
        """Number of live chunks in the collection."""
        ...

    def iter_vectors(
        self, *, after_id: int = 0, batch_size: int = 8192
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (ids int64 (n,), vectors float32 (n, dim)) for live chunks with id > after_id, ascending."""
        ...

    def vectors_for(self, ids: np.ndarray) -> np.ndarray:
        """Full-width float32 vectors (n, dim) for the given chunk ids, in the given order."""
        ...


class TextSource(Protocol):
    """What a lexical index reads from the catalog to replay or rebuild itself."""

    def iter_texts(self, *, after_id: int = 0, batch_size: int = 8192) -> Iterator[tuple[np.ndarray, list[str]]]:
        """Yield (ids int64 (n,), texts) for live chunks with id > after_id, ascending."""
        ...

    def live_ids(self, *, up_to: int) -> np.ndarray:
        """Sorted int64 ids of live chunks with id <= up_to."""
        ...
