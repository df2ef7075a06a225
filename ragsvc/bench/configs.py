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


@dataclass(frozen=True, slots=True)
class BenchConfig:
    name: str
    spec: IndexSpec
    sweep: tuple[dict[str, Any], ...] = field(default=({},))
    """Search-time keyword options, one measured point each."""


def default_configs() -> list[BenchConfig]:
    """Full-width HNSW, the FAISS family, adaptive d' = 64/128/192 with a shortlist sweep, 1 vs 4 shards."""
    shortlists = tuple({"shortlist": s} for s in SHORTLIST_SWEEP)
    configs = [
        BenchConfig("hnsw-full", IndexSpec(backend="hnsw")),
        BenchConfig("hnsw-full-4shards", IndexSpec(backend="hnsw", num_shards=4)),
        BenchConfig("faiss-flat", IndexSpec(backend="faiss_flat")),
        BenchConfig("faiss-ivf", IndexSpec(backend="faiss_ivf")),
        BenchConfig("faiss-hnsw", IndexSpec(backend="faiss_hnsw")),
    ]
    for dims in (64, 128, 192):
        configs.append(BenchConfig(f"adaptive-d{dims}", IndexSpec(backend="hnsw", dims=dims), shortlists))
    configs.append(BenchConfig("adaptive-d128-4shards", IndexSpec(backend="hnsw", dims=128, num_shards=4),
                               shortlists))
    return configs


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
    from ragsvc.index.collection_index import CollectionIndex

    started = time.perf_counter()
    index = CollectionIndex.from_arrays(vectors, spec=config.spec, directory=index_dir)  # chunk ids 1..n
    build_s = time.perf_counter() - started
    try:
        index.save()  # so the next run reopens instead of rebuilding
        # ANN structure + rescoring vectors + rotation, all held in RAM by the index layer (nothing mmapped).
        index_bytes = int(index.index_bytes)
        k = truth.shape[1]
        rows = []
        served_by = [""]
        for options in config.sweep:

            def search_one(q: np.ndarray, _options: dict[str, Any] = options) -> np.ndarray:
                ids, _, _, served_by[0] = index.search(q, k, **_options)
                ids = np.asarray(ids).reshape(-1)
                return ids[ids > 0] - 1  # chunk id -> row; drops -1 padding

            m = measure(search_one, queries, truth)
            suffix = "".join(f"-{key[0]}{value}" for key, value in options.items())
            rows.append({"name": config.name + suffix, "recall_at_10": m.recall_at_10, "qps": m.qps,
                         "index_bytes": index_bytes, "mean_latency_ms": m.mean_latency_ms,
                         "p99_latency_ms": m.p99_latency_ms, "open_or_build_s": round(build_s, 1),
                         "served_by": served_by[0],
                         "params": {**config.spec.to_dict(), **options}})
            logger.info("config %s: recall %.4f, %.0f QPS, %d bytes", rows[-1]["name"], m.recall_at_10, m.qps,
                        index_bytes)
    finally:
        index.close()
    return rows
