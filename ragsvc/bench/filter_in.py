"""`ragsvc bench filter`: a large `$in` filter evaluated as a set (semi-join) vs as an OR of equalities.

Both run in the same process on the same real duckdb catalog: `num_chunks` one-chunk documents whose
metadata `tag` is distinct, filtered by a `$in` list of `num_values` tags of which every other one exists.
The OR spelling is what filters compiled to before membership became a semi-join; it is the peer.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ragsvc.bench.provenance import cpu_model, package_git_sha
from ragsvc.index.spec import IndexSpec
from ragsvc.store.catalog import Catalog
from ragsvc.store.filters import FilterLimits, Membership
from ragsvc.store.records import CollectionRecord, PreparedChunk, PreparedDocument

DIM = 8
COLLECTION = "filter-bench"


@dataclass(frozen=True)
class FilterBenchResult:
    num_chunks: int
    num_values: int
    matched: int
    set_ms: list[float]
    or_ms: list[float]
    git_sha: str
    cpu: str

    @property
    def speedup(self) -> float:
        return round(statistics.median(self.or_ms) / statistics.median(self.set_ms), 1)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "set_ms_median": round(statistics.median(self.set_ms), 2),
                "or_ms_median": round(statistics.median(self.or_ms), 2), "speedup": self.speedup}


def run_filter_bench(work_dir: Path, *, num_chunks: int = 10_000, num_values: int = 25_000, set_repeats: int = 5,
                     or_repeats: int = 1) -> FilterBenchResult:
    catalog = Catalog(Path(work_dir) / "catalog.duckdb")
    try:
        _fill(catalog, num_chunks)
        filter_ = {"tag": {"$in": [f"t{i}" for i in range(0, 2 * num_values, 2)]}}
        limits = FilterLimits(max_in_values=max(num_values, FilterLimits().max_in_values))
        timings: dict[str, list[float]] = {}
        counts: dict[str, int] = {}
        runs: tuple[tuple[Membership, int], ...] = (("set", set_repeats), ("or", or_repeats))
        for membership, repeats in runs:
            timings[membership], counts[membership] = _time(catalog, filter_, limits, membership, repeats)
        if counts["set"] != counts["or"]:
            raise RuntimeError(f"set and OR filters disagree: {counts}")
    finally:
        catalog.close()
    return FilterBenchResult(num_chunks, num_values, counts["set"], timings["set"], timings["or"],
                             package_git_sha(), cpu_model())


def _fill(catalog: Catalog, num_chunks: int) -> None:
    catalog.create_collection(CollectionRecord(COLLECTION, "bench-8", DIM, IndexSpec(backend="exact"), 200, 0))
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((num_chunks, DIM)).astype(np.float32)
    docs = [PreparedDocument(f"d{i}", None, f"h{i}", {"tag": f"t{i}"}, f"text {i}",
                             [PreparedChunk(f"text {i}", 0, 6, {"tag": f"t{i}"}, f"c{i}", vectors[i])])
            for i in range(num_chunks)]
    catalog.write_documents(COLLECTION, docs, embedder_id="bench-8")


def _time(catalog: Catalog, filter_: dict[str, Any], limits: FilterLimits, membership: Membership,
          repeats: int) -> tuple[list[float], int]:
    times, count = [], 0
    for _ in range(repeats):
        started = time.perf_counter()
        count = len(catalog.filter_chunk_ids(COLLECTION, filter_, limits=limits, membership=membership))
        times.append(round((time.perf_counter() - started) * 1000.0, 2))
    return times, count
