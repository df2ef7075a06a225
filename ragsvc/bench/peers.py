"""The peers ragsvc is measured against, run raw (no ragsvc code): hnswlib with an ef sweep, and faiss flat.

The hnswlib graph is cached in its own native file under the benchmark cache (keyed by corpus hash and build
parameters), so reruns measure search without paying the build again.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from ragsvc.bench.search_records import SearchRow
from ragsvc.bench.timing import measure

logger = logging.getLogger(__name__)

HNSW_EF_SWEEP = (10, 16, 24, 32, 48, 64, 96, 128, 144, 160, 176, 192, 224, 256, 320)
"""Fine steps from 128 up: on the 200k corpus raw hnswlib M=16 crosses recall 0.95 near ef 160, and the
reference is the fastest point past 0.95, so a coarse sweep would hand it a slower ef than it needs."""


def build_hnswlib(vectors: np.ndarray, *, m: int, ef_construction: int, cache_dir: Path,
                  build_threads: int = 2) -> tuple[Any, float]:
    """A raw hnswlib inner-product index over `vectors` (labels = row ids); loaded from cache when present."""
    import hnswlib

    n, dim = vectors.shape
    index = hnswlib.Index(space="ip", dim=dim)
    path = cache_dir / f"hnswlib-M{m}-efc{ef_construction}-n{n}.bin"
    if path.is_file():
        index.load_index(str(path), max_elements=n)
        return index, 0.0
    started = time.perf_counter()
    index.init_index(max_elements=n, M=m, ef_construction=ef_construction, random_seed=100)
    index.set_num_threads(build_threads)  # building is not what is measured; searching is single-threaded
    index.add_items(vectors, np.arange(n))
    build_s = time.perf_counter() - started
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    index.save_index(str(tmp))
    tmp.replace(path)
    return index, build_s


def hnswlib_peer(vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray, *, m: int, ef_construction: int,
                 cache_dir: Path, ef_sweep: tuple[int, ...] = HNSW_EF_SWEEP) -> list[SearchRow]:
    """One row per ef. index_bytes = hnswlib's own size of its in-memory structure (vectors + graph + labels)."""
    index, build_s = build_hnswlib(vectors, m=m, ef_construction=ef_construction, cache_dir=cache_dir)
    index.set_num_threads(1)
    k = truth.shape[1]
    # index_file_size() is what save_index writes: the level-0 block (vector + links + label per element) and
    # the upper-level link lists, i.e. every byte the search touches.
    index_bytes = int(index.index_file_size())
    rows = []
    for ef in ef_sweep:
        index.set_ef(max(ef, k))

        def search_one(q: np.ndarray, _index=index) -> np.ndarray:
            labels, _ = _index.knn_query(q, k=k)  # (1, k)
            return labels[0]

        result = measure(search_one, queries, truth)
        rows.append(SearchRow(f"hnswlib-M{m}-ef{max(ef, k)}", result, index_bytes, build_s=round(build_s, 1),
                              params={"M": m, "ef_construction": ef_construction, "ef": max(ef, k)}))
        logger.info("peer %s: recall %.4f, %.0f QPS", rows[-1].name, result.recall_at_10, result.qps)
    return rows


def faiss_flat_peer(vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray) -> SearchRow:
    """Raw faiss IndexFlatIP, one query at a time on one OpenMP thread; bytes = the float32 vectors it holds."""
    import faiss

    faiss.omp_set_num_threads(1)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    k = truth.shape[1]

    def search_one(q: np.ndarray) -> np.ndarray:
        _, labels = index.search(q.reshape(1, -1), k)  # (1, k)
        return labels[0]

    result = measure(search_one, queries, truth)
    return SearchRow("faiss-flat", result, int(index.ntotal * index.d * 4), params={"metric": "inner_product"})
