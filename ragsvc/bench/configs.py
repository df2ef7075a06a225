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

from ragsvc.bench.timing import measure
from ragsvc.index.spec import IndexSpec

logger = logging.getLogger(__name__)

SHORTLIST_SWEEP = (25, 50, 100, 200, 400)
BUILD_THREADS = 2


@dataclass(frozen=True, slots=True)
class BenchConfig:
    name: str
    spec: IndexSpec
    sweep: tuple[dict[str, Any], ...] = field(default=({},))
    """Search-time keyword options, one measured point each."""


def default_configs() -> list[BenchConfig]:
    """Adaptive first (the targets), then full-width HNSW 1 vs 4 shards, then the FAISS family.

    `adaptive-d*` index the PCA-rotated d' prefix in hnswlib (float32) and rescore the shortlist from int8
    full-width vectors; `adaptive-sq8-d*` keep the prefix scalar-quantised to 8 bits in a faiss HNSW graph;
    `adaptive-tail-*` also drop the prefix from the rescoring vectors (the ANN's own prefix score is reused),
    the layout the index layer proposes to fit in a third of hnswlib's memory (`-m12`: hnsw_m = 12).
    """
    shortlists = tuple({"shortlist": s} for s in SHORTLIST_SWEEP)

    def adaptive(name: str, **spec: Any) -> BenchConfig:
        return BenchConfig(name, IndexSpec(**spec), shortlists)

    return [
        adaptive("adaptive-tail-sq8-d96-m12", backend="faiss_hnsw", dims=96, prefix_quant="sq8",
                 rescore_tail_only=True, hnsw_m=12),
        adaptive("adaptive-tail-sq8-d64", backend="faiss_hnsw", dims=64, prefix_quant="sq8", rescore_tail_only=True),
        adaptive("adaptive-sq8-d128", backend="faiss_hnsw", dims=128, prefix_quant="sq8"),
        adaptive("adaptive-d128", backend="hnsw", dims=128),
        adaptive("adaptive-d64", backend="hnsw", dims=64),
        adaptive("adaptive-d192", backend="hnsw", dims=192),
        BenchConfig("hnsw-full", IndexSpec(backend="hnsw")),
        BenchConfig("hnsw-full-4shards", IndexSpec(backend="hnsw", num_shards=4)),
        adaptive("adaptive-d128-4shards", backend="hnsw", dims=128, num_shards=4),
        BenchConfig("faiss-hnsw", IndexSpec(backend="faiss_hnsw")),
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
               index_dir: Path) -> list[dict[str, Any]]:
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
        served_by = [""]
        for options in config.sweep:

            def search_one(q: np.ndarray, _options: dict[str, Any] = options) -> np.ndarray:
                ids, _, _, served_by[0] = index.search(q, k, **_options)
                ids = np.asarray(ids).reshape(-1)
                return ids[ids > 0] - 1  # chunk id -> row; drops -1 padding

            m = measure(search_one, queries, truth)
            suffix = "".join(f"-{key[0]}{value}" for key, value in options.items())
            rows.append({"name": config.name + suffix, **m.fields(), "index_bytes": index_bytes,
                         "open_or_build_s": round(build_s, 1), "served_by": served_by[0],
                         "params": {**config.spec.to_dict(), **options}})
            logger.info("config %s: recall %.4f, %.0f QPS, %d bytes", rows[-1]["name"], m.recall_at_10, m.qps,
                        index_bytes)
    finally:
        index.close()
    return rows
