"""The storage layer under the BM25 index: per-row arrays, an immutable main segment and an append-only delta.

Layout (Lucene's idea, cut down to two segments):
- Rows: every document added gets the next row number; a row's chunk id, length and live flag sit in
  `RowTable`'s growable numpy buffers. Deletes only clear the live flag (a tombstone); row numbers are
  reassigned densely when segments merge.
- `MainSegment`: term-major CSC arrays (indptr, rows, term frequencies) over rows 0..n-1. Never changed in
  place, so a query slices a term's postings without copying.
- `DeltaSegment`: postings of the rows added since the last merge, kept per term in `array.array`s that
  grow in amortised O(1) per posting. An ingest batch thus costs O(its own postings), not O(index), and is
  searchable at once. Once the delta reaches a fraction of main, `merge_segments` rebuilds one CSC
  (scipy's counting-sort COO -> CSC) without the tombstoned rows and without terms no live row uses.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass

import numpy as np
import scipy.sparse

_EMPTY_I32 = np.zeros(0, dtype=np.int32)


class RowTable:
    """Chunk id, document length and live flag per row, in buffers whose capacity doubles."""

    def __init__(self, row_ids: np.ndarray | None = None, doc_len: np.ndarray | None = None) -> None:
        ids = np.zeros(0, np.int64) if row_ids is None else np.asarray(row_ids, dtype=np.int64)
        lens = np.zeros(0, np.int32) if doc_len is None else np.asarray(doc_len, dtype=np.int32)
        self._ids, self._len = ids.copy(), lens.copy()  # (capacity,) each
        self._live = np.ones(len(ids), dtype=bool)  # (capacity,)
        self._count = len(ids)
        self.num_dead = 0

    def __len__(self) -> int:
        """Rows, live or tombstoned."""
        return self._count

    @property
    def ids(self) -> np.ndarray:
        return self._ids[: self._count]

    @property
    def doc_len(self) -> np.ndarray:
        return self._len[: self._count]

    @property
    def live(self) -> np.ndarray:
        return self._live[: self._count]

    def append(self, ids: np.ndarray, lens: np.ndarray) -> int:
        """Add rows for these chunks; returns the first new row number."""
        first, n = self._count, len(ids)
        if first + n > len(self._ids):
            capacity = max(first + n, 2 * len(self._ids), 1024)
            self._ids = np.resize(self._ids, capacity)
            self._len = np.resize(self._len, capacity)
            self._live = np.resize(self._live, capacity)
        self._ids[first : first + n] = ids
        self._len[first : first + n] = lens
        self._live[first : first + n] = True
        self._count += n
        return first

    def kill(self, rows: np.ndarray) -> None:
        """Tombstone rows (each must be live)."""
        self._live[rows] = False
        self.num_dead += len(rows)

    @property
    def nbytes(self) -> int:
        return self._count * (8 + 4 + 1)


@dataclass(frozen=True, eq=False, slots=True)
class MainSegment:
    indptr: np.ndarray  # int64 (num_terms + 1,)
    rows: np.ndarray  # int32 (nnz,)
    tfs: np.ndarray  # int32 (nnz,)

    @classmethod
    def empty(cls) -> MainSegment:
        return cls(np.zeros(1, np.int64), _EMPTY_I32, _EMPTY_I32)

    @property
    def num_terms(self) -> int:
        return len(self.indptr) - 1

    def postings(self, term: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, tfs) of a term, views into the segment; empty for terms added after this segment."""
        if term >= self.num_terms:
            return _EMPTY_I32, _EMPTY_I32
        start, end = self.indptr[term], self.indptr[term + 1]
        return self.rows[start:end], self.tfs[start:end]

    @property
    def nbytes(self) -> int:
        return int(self.indptr.nbytes + self.rows.nbytes + self.tfs.nbytes)


class DeltaSegment:
    """Postings of recently added rows: term id -> array('i') of interleaved (row, tf) pairs."""

    def __init__(self) -> None:
        self._postings: dict[int, array[int]] = {}
        self.num_rows = 0
        self.num_postings = 0

    def add_doc(self, row: int, term_counts: dict[int, int]) -> None:
        postings = self._postings
        for term, tf in term_counts.items():
            pairs = postings.get(term)
            if pairs is None:
                pairs = postings[term] = array("i")
            pairs.append(row)
            pairs.append(tf)
        self.num_rows += 1
        self.num_postings += len(term_counts)

    def postings(self, term: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, tfs) of a term, copied out (a live numpy view would stop the array from growing)."""
        pairs = self._postings.get(term)
        if pairs is None:
            return _EMPTY_I32, _EMPTY_I32
        both = np.frombuffer(pairs, dtype=np.int32).reshape(-1, 2).copy()  # (postings, [row, tf])
        return both[:, 0], both[:, 1]

    def to_coo(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows, terms, tfs), each int32 (num_postings,)."""
        if not self._postings:
            return _EMPTY_I32, _EMPTY_I32, _EMPTY_I32
        terms = np.fromiter(self._postings, dtype=np.int32, count=len(self._postings))
        counts = np.fromiter((len(p) // 2 for p in self._postings.values()), dtype=np.int64, count=len(terms))
        both = np.concatenate([np.frombuffer(p, dtype=np.int32) for p in self._postings.values()]).reshape(-1, 2)
        return both[:, 0].copy(), np.repeat(terms, counts), both[:, 1].copy()

    @property
    def nbytes(self) -> int:
        return 8 * self.num_postings + 100 * len(self._postings)  # pairs + per-array and dict-slot overhead


def merge_segments(main: MainSegment, delta: DeltaSegment, live: np.ndarray,
                   num_terms: int) -> tuple[MainSegment, np.ndarray]:
    """One CSC over the live rows of both segments, renumbered densely in row order.

    Returns the segment and the old ids of the terms it keeps (those with a live posting), in id order:
    term i of the new segment is old term kept[i]. The caller renumbers rows and terms the same way.
    """
    delta_rows, delta_terms, delta_tfs = delta.to_coo()
    main_terms = np.repeat(np.arange(main.num_terms, dtype=np.int32), np.diff(main.indptr))  # (main nnz,)
    rows = np.concatenate([main.rows, delta_rows])  # (nnz,)
    terms = np.concatenate([main_terms, delta_terms])
    tfs = np.concatenate([main.tfs, delta_tfs])
    keep = live[rows]
    rows, terms, tfs = rows[keep], terms[keep], tfs[keep]
    new_row = (np.cumsum(live) - 1).astype(np.int32)  # (old rows,) -> dense new row (valid where live)
    kept_terms = np.flatnonzero(np.bincount(terms, minlength=num_terms))
    new_term = np.full(num_terms, -1, dtype=np.int32)
    new_term[kept_terms] = np.arange(len(kept_terms), dtype=np.int32)
    shape = (int(live.sum()), len(kept_terms))
    csc = scipy.sparse.csc_array((tfs, (new_row[rows], new_term[terms])), shape=shape)
    csc.sort_indices()
    segment = MainSegment(csc.indptr.astype(np.int64), csc.indices.astype(np.int32), csc.data.astype(np.int32))
    return segment, kept_terms
