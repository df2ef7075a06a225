"""A native search over a faiss `IndexHNSWSQ` (8-bit codes, inner product): same graph, same codes, no copy.

Why: faiss walks its HNSW graph through a generic distance computer and fetches each neighbour's codes only
when it scores it, so every hop waits on memory. This walk prefetches all of a node's unvisited neighbours
before scoring them (as hnswlib does) and scores 8-bit codes with AVX-512 directly. On the corpus of
`ragsvc bench search` (200k MiniLM vectors, PCA-rotated 256-d prefix, M=16, ef=128, one thread, its 1,000
queries, same index file) faiss took 445 us a query and this walk 276 us, with identical neighbours (overlap
1.0) and scores within 2e-7. End to end, that benchmark (configs `adaptive-tail-sq8-*`) compares with hnswlib.
The C++ is sq8_graph_search.cpp beside this module, built by `ragsvc.native`.

Scores equal faiss's: QT_8bit decodes component i as vmin_i + (c_i + 0.5) / 255 * vdiff_i, so
<q, x> = sum_i w_i c_i + b with w_i = q_i vdiff_i / 255 and b = sum_i q_i (vmin_i + 0.5 vdiff_i / 255).
The walk is faiss's HNSW search (greedy descent on the upper levels, then a best-first beam of width ef on
level 0), so it returns the same neighbours up to ties.

Used only where it is exact to do so: inner product and no filter (a filter goes to faiss's IDSelector path).
Deleted ids (faiss HNSW cannot remove nodes) are marked dead: they still route the walk but are never returned.
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any

import numpy as np

from ragsvc.index.results import ShardHits
from ragsvc.native import load_library, read_source

_LIB_LOCK = threading.Lock()
_LIB: list[Any] = []  # [] = not tried yet, [None] = unavailable, [lib] = loaded


def _library() -> Any:
    with _LIB_LOCK:
        if not _LIB:
            ptr = ctypes.c_void_p
            source, headers = read_source(__package__, "sq8_graph_search.cpp")
            _LIB.append(load_library("sq8_hnsw_search", source, headers=headers, signatures={
                "sq8_hnsw_search": ([ptr, ctypes.c_int64, ctypes.c_int32, ptr, ptr, ptr, ctypes.c_int32,
                                     ctypes.c_int32, ptr, ctypes.c_int32, ctypes.c_int32, ptr, ptr,
                                     ctypes.c_uint16, ptr, ptr], ctypes.c_int64)}))
        return _LIB[0]


def _view(vector: Any, dtype: type, count: int) -> np.ndarray:
    """A numpy view (no copy) of a faiss std::vector's first `count` elements."""
    import faiss

    if count == 0:
        return np.zeros(0, dtype)
    return faiss.rev_swig_ptr(vector.data(), count).view(dtype)


class Sq8GraphSearcher:
    """Searches one `IndexIDMap(IndexHNSWSQ(QT_8bit, inner product))`; `refresh()` after every add."""

    def __init__(self, id_map_index: Any) -> None:
        import faiss

        self._outer = id_map_index
        self._inner: Any = faiss.downcast_index(id_map_index.index)
        self._lib = _library()
        self._local = threading.local()  # per-thread visited tags: searches may run in parallel threads
        self._dead: np.ndarray | None = None  # (n,) uint8, 1 = deleted; None while nothing is
        self.refresh()

    @staticmethod
    def supports(index: Any) -> bool:
        import faiss

        if not isinstance(index, faiss.IndexIDMap):
            return False
        inner = faiss.downcast_index(index.index)
        if not isinstance(inner, faiss.IndexHNSWSQ) or inner.metric_type != faiss.METRIC_INNER_PRODUCT:
            return False
        storage: Any = faiss.downcast_index(inner.storage)
        return bool(storage.sq.qtype == faiss.ScalarQuantizer.QT_8bit and storage.sq.code_size == inner.d)

    @property
    def available(self) -> bool:
        return self._lib is not None

    def refresh(self) -> None:
        """Re-take the views: an add may have reallocated every faiss vector."""
        import faiss

        inner: Any = self._inner
        hnsw = inner.hnsw
        storage: Any = faiss.downcast_index(inner.storage)
        n = int(inner.ntotal)
        self._n, self._d = n, int(inner.d)
        self._codes = _view(storage.codes, np.uint8, n * self._d)
        self._neighbors = _view(hnsw.neighbors, np.int32, int(hnsw.neighbors.size()))
        self._offsets = _view(hnsw.offsets, np.uint64, int(hnsw.offsets.size()))
        self._cum = faiss.vector_to_array(hnsw.cum_nneighbor_per_level).astype(np.int32)
        self._entry, self._max_level = int(hnsw.entry_point), int(hnsw.max_level)
        trained = faiss.vector_to_array(storage.sq.trained).astype(np.float32)  # (2 d,): vmin, vdiff
        self._vmin, self._vdiff = trained[: self._d], trained[self._d :]
        self._labels = _view(self._outer.id_map, np.int64, n)
        if self._dead is not None and len(self._dead) < n:  # rows added since: alive
            self._dead = np.concatenate([self._dead, np.zeros(n - len(self._dead), np.uint8)])

    def mark_dead(self, tombstones: np.ndarray) -> None:
        """Exclude these chunk ids (sorted, unique int64) from results from now on."""
        if not len(tombstones):
            self._dead = None
            return
        self._dead = np.isin(self._labels, tombstones).astype(np.uint8)  # (n,)

    def search(self, query: np.ndarray, k: int, ef: int) -> ShardHits:
        """query (d,) float32 -> ids and scores (1, m), best first, m <= k (fewer only if the graph is); no padding."""
        q = np.asarray(query, np.float32).reshape(-1)
        w = np.ascontiguousarray(q * self._vdiff * np.float32(1 / 255))  # (d,)
        bias = float(q @ (self._vmin + self._vdiff * np.float32(0.5 / 255)))
        visited, tag = self._visited()
        scores = np.empty(k, np.float32)
        rows = np.empty(k, np.int64)
        found = self._lib.sq8_hnsw_search(
            self._codes.ctypes.data, self._d, self._d, self._neighbors.ctypes.data, self._offsets.ctypes.data,
            self._cum.ctypes.data, self._entry, self._max_level, w.ctypes.data, max(ef, k), k,
            None if self._dead is None else self._dead.ctypes.data, visited.ctypes.data, tag,
            scores.ctypes.data, rows.ctypes.data)
        return ShardHits(self._labels[rows[:found]][None, :], (scores[:found] + np.float32(bias))[None, :])

    def _visited(self) -> tuple[np.ndarray, int]:
        """This thread's visited table and a fresh tag; the table is cleared once every 65,535 searches."""
        local = self._local
        table = getattr(local, "table", None)
        if table is None or len(table) < self._n:
            table = local.table = np.zeros(max(self._n, 1), np.uint16)
            local.tag = 0
        local.tag += 1
        if local.tag > 0xFFFF:
            table.fill(0)
            local.tag = 1
        return table, local.tag
