"""Measurement primitives shared by every benchmarked system: the exact answer, recall@k, one-query-at-a-time QPS.

Every system is timed by the same loop: a warm-up pass (excluded) then every query once, one at a time, on one
thread, as a single API call would search. Peers and ragsvc configs run in the same process and run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

SearchOne = Callable[[np.ndarray], np.ndarray]
"""Takes one query (dim,) float32 and returns the ids of its top k, best first (fewer if the index has fewer)."""

WARMUP_QUERIES = 50
REPEATS = 3


@dataclass(frozen=True, slots=True)
class Measurement:
    recall_at_10: float
    qps: float
    mean_latency_ms: float
    p99_latency_ms: float
    qps_all_passes: list[float]

    def fields(self) -> dict[str, object]:
        """The JSON row fields: recall_at_10, qps, latencies, every pass's QPS."""
        return {"recall_at_10": self.recall_at_10, "qps": self.qps, "mean_latency_ms": self.mean_latency_ms,
                "p99_latency_ms": self.p99_latency_ms, "qps_all_passes": self.qps_all_passes}


def exact_topk(vectors: np.ndarray, queries: np.ndarray, k: int, *, block: int = 256) -> np.ndarray:
    """Exact top-k by inner product (vectors are normalised, so cosine): (num_queries, k) int64 row ids."""
    k = min(k, vectors.shape[0])
    out = np.empty((queries.shape[0], k), dtype=np.int64)
    for start in range(0, queries.shape[0], block):
        scores = queries[start : start + block] @ vectors.T  # (b, n)
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]  # (b, k) unordered
        order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
        out[start : start + block] = np.take_along_axis(part, order, axis=1)
    return out


def recall_at_k(found: list[np.ndarray], truth: np.ndarray) -> float:
    """Mean over queries of |found ∩ truth| / |truth|; `found` rows may be shorter than k."""
    hits = sum(len(np.intersect1d(f, t, assume_unique=False)) for f, t in zip(found, truth, strict=True))
    return hits / truth.size


def measure(search_one: SearchOne, queries: np.ndarray, truth: np.ndarray, *, repeats: int = REPEATS
             ) -> Measurement:
    """Warm up, then time every query once, one at a time, `repeats` times; QPS is the best pass.

    The best pass is reported (as ann-benchmarks does) because benchmark machines are often shared (CI runners,
    cloud VMs): a slower pass measures other jobs, not the index. Recall comes from the first timed pass (every
    pass returns the same). BLAS and OpenMP pools are held to one thread while timing: numpy's rescoring matmuls
    would otherwise fan out to every core for a (1, d) x (d, L) product, which only adds synchronisation on a
    busy machine.
    """
    found: list[np.ndarray] = []
    passes: list[np.ndarray] = []
    with threadpool_limits(limits=1):
        for q in queries[:WARMUP_QUERIES]:
            search_one(q)
        for attempt in range(repeats):
            latencies = np.empty(queries.shape[0], dtype=np.float64)
            for i, q in enumerate(queries):
                t = time.perf_counter()
                ids = search_one(q)
                latencies[i] = time.perf_counter() - t
                if attempt == 0:
                    found.append(np.asarray(ids, dtype=np.int64).reshape(-1))
            passes.append(latencies)
    best = min(passes, key=lambda lat: float(lat.sum()))
    return Measurement(
        recall_at_10=round(recall_at_k(found, truth), 4),
        qps=round(queries.shape[0] / float(best.sum()), 1),
        mean_latency_ms=round(float(best.mean()) * 1e3, 4),
        p99_latency_ms=round(float(np.percentile(best, 99)) * 1e3, 4),
        qps_all_passes=[round(queries.shape[0] / float(lat.sum()), 1) for lat in passes],
    )
