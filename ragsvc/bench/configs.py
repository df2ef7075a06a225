"""The ragsvc index configurations the search benchmark measures, and how each is built and searched.

Each config is an `IndexSpec` built once through `CollectionIndex.from_arrays` (the same code the service
runs, chunk ids 1..n), plus a sweep of search-time options (the Matryoshka shortlist L). Built indexes are
saved under the benchmark cache, so a rerun reopens them instead of rebuilding.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ragsvc.bench.search_records import SearchRow
from ragsvc.bench.timing import measure
from ragsvc.index.spec import IndexSpec
from ragsvc.types import ServedBy

logger = logging.getLogger(__name__)

SHORTLIST_SWEEP = (25, 50, 100, 200, 400)
WIDE_SHORTLIST_SWEEP = (64, 96, 128, 144, 160, 192, 224, 256)
"""For the 8-bit tail layouts, whose graph search breadth is the shortlist: fine steps where recall crosses 0.95."""
BUILD_THREADS = 2


@dataclass(frozen=True, slots=True)
class BenchConfig:
    name: str
    spec: IndexSpec
    sweep: tuple[dict[str, Any], ...] = field(default=({},))
    """Search-time keyword options, one measured point each."""


def default_configs() -> list[BenchConfig]:
    """Adaptive first (the targets), then full-width HNSW 1 vs 4 shards, then the FAISS family.

    `adaptive-tail-sq8-d256*` is the layout meant to meet the adaptive target (targets.py: at least hnswlib's QPS
    at recall@10 0.95 in a third of its bytes): a faiss HNSW graph over the PCA-rotated first 256 dimensions
    stored as 8-bit codes (256 B a vector), the last 128 dimensions kept as int8 for rescoring (the prefix part
    of each score is the graph's own), about a third of hnswlib's bytes.
    On the 200k benchmark corpus an exact search on the rotated 256-d prefix followed by full-width rescoring
    reaches recall@10 0.998 at L = 50, against 0.93 for d' = 192 and 0.76 for d' = 128 (the benchmark's
    out-of-domain queries lean on the tail). `-d192` trades the other way: a wider shortlist, fewer dimensions
    scored per hop; in one `ragsvc bench search` run it was the fastest point past recall 0.95 (1.57x hnswlib's
    QPS, d256 1.41x in the same run), so both stay in the sweep.
    `adaptive-d192` indexes the rotated prefix in hnswlib (float32) and rescores from int8 full-width vectors.
    """
    shortlists = tuple({"shortlist": s} for s in SHORTLIST_SWEEP)
    wide = tuple({"shortlist": s} for s in WIDE_SHORTLIST_SWEEP)

    def adaptive(name: str, sweep: tuple[dict[str, Any], ...] = shortlists, **spec: Any) -> BenchConfig:
        return BenchConfig(name, IndexSpec(**spec), sweep)

    return [
        adaptive("adaptive-tail-sq8-d256", wide, backend="faiss_hnsw", dims=256, prefix_quant="sq8",
                 rescore_tail_only=True),
        adaptive("adaptive-tail-sq8-d256-m12", wide, backend="faiss_hnsw", dims=256, prefix_quant="sq8",
                 rescore_tail_only=True, hnsw_m=12),
        adaptive("adaptive-tail-sq8-d192", wide, backend="faiss_hnsw", dims=192, prefix_quant="sq8",
                 rescore_tail_only=True),
        adaptive("adaptive-d192", backend="hnsw", dims=192),
        adaptive("adaptive-d128", backend="hnsw", dims=128),
        BenchConfig("hnsw-full", IndexSpec(backend="hnsw")),
        BenchConfig("hnsw-full-4shards", IndexSpec(backend="hnsw", num_shards=4)),
        BenchConfig("faiss-hnsw-sq8", IndexSpec(backend="faiss_hnsw", prefix_quant="sq8"),
                    tuple({"ef_search": e} for e in (64, 128, 192))),
        BenchConfig("faiss-ivf", IndexSpec(backend="faiss_ivf")),
        BenchConfig("faiss-flat", IndexSpec(backend="faiss_flat")),
    ]


def select_configs(configs: list[BenchConfig], names: str | None) -> list[BenchConfig]:
    """`names` is a comma-separated list of config names or name prefixes ("adaptive" picks every d')."""
    if not names:
        return configs
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    picked = [c for c in configs if any(c.name == w or c.name.startswith(w + "-") or c.name.startswith(w)
                                        for w in wanted)]
    if not picked:
        known = ", ".join(c.name for c in configs)
        raise ValueError(f"--configs {names!r} matches no config; known: {known}")
    return picked


def run_config(config: BenchConfig, vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray, *,
               index_dir: Path) -> list[SearchRow]:
    """Build (or reopen) one config and measure every point of its sweep; rows of the JSON `configs`."""
    import faiss

    from ragsvc.index.collection_index import CollectionIndex

    faiss.omp_set_num_threads(BUILD_THREADS)  # building is not what is measured
    started = time.perf_counter()
    index = CollectionIndex.from_arrays(vectors, spec=config.spec, directory=index_dir)  # chunk ids 1..n
    build_s = time.perf_counter() - started
    try:
        index.save()  # so the next run reopens instead of rebuilding
        # ANN structure + rescoring vectors + rotation, all held in RAM by the index layer (nothing mmapped).
        index_bytes = int(index.index_bytes)
        k = truth.shape[1]
        faiss.omp_set_num_threads(1)  # searching is: one thread per query
        rows = []
        served_by: list[ServedBy | None] = [None]  # rendered once per point, outside the timed searches
        for options in config.sweep:

            def search_one(q: np.ndarray, _options: dict[str, Any] = options) -> np.ndarray:
                result = index.search(q, k, **_options)
                served_by[0] = result.served_by
                ids = np.asarray(result.ids).reshape(-1)
                return ids[ids > 0] - 1  # chunk id -> row; drops -1 padding

            m = measure(search_one, queries, truth)
            suffix = "".join(f"-{key[0]}{value}" for key, value in options.items())
            rows.append(SearchRow(config.name + suffix, m, index_bytes, open_or_build_s=round(build_s, 1),
                                  served_by=str(served_by[0] or ""), params={**config.spec.to_dict(), **options}))
            logger.info("config %s: recall %.4f, %.0f QPS, %d bytes", rows[-1].name, m.recall_at_10, m.qps,
                        index_bytes)
    finally:
        index.close()
    return rows
