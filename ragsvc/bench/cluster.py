"""`ragsvc bench cluster`: in-process `ShardedIndex` against Ray shard actors (`RayShardedIndex`), same run.

The corpus and queries are `bench search`'s (real MiniLM vectors of real passages, held-out queries, exact
truth by brute force). For each shard count the in-process index is built once and its shard files are
written once per replica, so the actors load exactly the graphs the peer searches: recall must be identical,
and any difference in speed is the cost of going through Ray. Measured: recall@10, QPS and p50/p99 per call
at 1 and at N concurrent clients (threads in this process, one query per call, as API requests search),
the single-client fan-out overhead, and a run in which one replica is killed mid-load (Ray restarts it and
the index catches it up): errors, wrong answers, latency before and after, time to recovery.
"""

from __future__ import annotations

import os
import platform
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from ragsvc.bench.cluster_records import ClusterBenchResult, ClusterRow, KillRun, LoadPoint
from ragsvc.bench.corpus import load_or_build_corpus
from ragsvc.bench.provenance import cpu_model, package_git_sha
from ragsvc.bench.timing import WARMUP_QUERIES, exact_topk, recall_at_k
from ragsvc.cluster.catch_up import replica_is_current
from ragsvc.cluster.placement import DEFAULT_DEADLINE_MS, ClusterAddress, Placement, Spread
from ragsvc.cluster.ray_index import RayShardedIndex
from ragsvc.cluster.runtime import ClusterInfo, connect
from ragsvc.cluster.shard_host import write_replica_files
from ragsvc.index.collection_index import CollectionIndex
from ragsvc.index.factory import make_shard
from ragsvc.index.memory_source import InMemoryVectorSource
from ragsvc.index.sharded_index import ShardedIndex
from ragsvc.index.spec import IndexSpec

K = 10
SearchOne = Callable[[np.ndarray], np.ndarray]
NOTES = ("clients are threads of one driver process; on a machine with fewer cores than actors + clients, Ray "
         "adds processes competing for the same cores, so expect overhead, not speed-up",
         "ray replicas load the in-process build's shard files, so results must be identical",
         "the kill run kills replica 0 of shard 0 with restart allowed; its calls then wait for the restart "
         "until the hedge asks the other replica")


@dataclass(frozen=True, slots=True)
class _Timed:
    found: list[np.ndarray]
    latencies_ms: np.ndarray
    wall_s: float


def run_load(search_one: SearchOne, queries: np.ndarray, *, clients: int, passes: int = 1) -> _Timed:
    """Every query `passes` times from `clients` threads sharing one counter; per-call latency and wall time."""
    total = len(queries) * passes
    found: list[np.ndarray] = [np.zeros(0, np.int64)] * total
    latencies = np.zeros(total, np.float64)
    counter = iter(range(total))
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            started = time.perf_counter()
            found[i] = search_one(queries[i % len(queries)])
            latencies[i] = (time.perf_counter() - started) * 1000.0

    started = time.perf_counter()
    with threadpool_limits(limits=1), ThreadPoolExecutor(max_workers=clients) as pool:
        for future in [pool.submit(worker) for _ in range(clients)]:
            future.result()
    return _Timed(found, latencies, time.perf_counter() - started)


def _point(clients: int, timed: _Timed) -> LoadPoint:
    lat = timed.latencies_ms
    return LoadPoint(clients, len(lat), round(len(lat) / timed.wall_s, 1), round(float(np.percentile(lat, 50)), 3),
                     round(float(np.percentile(lat, 99)), 3))


def _measure(search_one: SearchOne, queries: np.ndarray, client_counts: Sequence[int]
             ) -> tuple[list[np.ndarray], list[LoadPoint], _Timed]:
    for q in queries[:WARMUP_QUERIES]:
        search_one(q)
    single = run_load(search_one, queries, clients=1)
    points = [_point(1, single)]
    for clients in client_counts:
        if clients != 1:
            points.append(_point(clients, run_load(search_one, queries, clients=clients, passes=2)))
    return single.found, points, single


def run_cluster_bench(*, num_vectors: int, num_queries: int, cache_dir: Path, work_dir: Path,
                      data_dir: Path | None = None, shard_counts: Sequence[int] = (1, 2, 4), replicas: int = 2,
                      client_counts: Sequence[int] = (1, 16), kill_shards: int | None = 2,
                      hedge_ms: float | None = None, address: str = "local") -> ClusterBenchResult:
    started = time.perf_counter()
    corpus = load_or_build_corpus(num_vectors=num_vectors, num_queries=num_queries, cache_dir=cache_dir,
                                  data_dir=data_dir)
    vectors, queries = corpus.vectors, corpus.queries  # (n, dim), (q, dim)
    ids = np.arange(1, len(vectors) + 1, dtype=np.int64)
    truth = exact_topk(vectors, queries, K) + 1  # (q, k) chunk ids
    info = connect(ClusterAddress.parse(address), num_cpus=os.cpu_count())
    rows: list[ClusterRow] = []
    kill: KillRun | None = None
    spec = IndexSpec(backend="hnsw", num_shards=1)
    for n in shard_counts:
        spec = IndexSpec(backend="hnsw", num_shards=n)
        built = time.perf_counter()
        local = ShardedIndex([make_shard(spec, vectors.shape[1]) for _ in range(n)])
        local.add(ids, vectors)
        build_s = time.perf_counter() - built
        local_found, local_points, local_single = _measure(_in_process(local), queries, client_counts)
        rows.append(ClusterRow("in_process", n, 1, round(recall_at_k(local_found, truth), 4), None,
                               tuple(local_points), None, None, None, local.nbytes, round(build_s, 2)))
        directory = work_dir / f"shards-{n}"
        for s, shard in enumerate(local.shards):
            for r in range(replicas):
                write_replica_files(shard, directory / f"shard-{s}-r{r}.hnsw", watermark=int(ids.max()))
        remote, start_s = _start_remote(spec, vectors, ids, n, replicas, info, directory, hedge_ms)
        try:
            rows.append(_ray_row(remote, queries, truth, client_counts, local_found, local_points, local_single,
                                 start_s, n, replicas))
            if n == kill_shards:
                kill = kill_run(remote, queries, local_found, clients=max(client_counts))
        finally:
            remote.close()
            local.close()
    memory = bytes_per_vector(vectors)
    return ClusterBenchResult(
        git_sha=package_git_sha(), cpu_model=cpu_model(), created_unix=int(time.time()),
        machine={"cpus": os.cpu_count(), "platform": platform.platform(), "ray_nodes": info.num_nodes,
                 "ray_cpus": info.num_cpus, "load_average": list(os.getloadavg())},
        corpus={"num_vectors": len(vectors), "num_queries": len(queries), "dim": int(vectors.shape[1]),
                "model_id": corpus.model_id, "corpus_hash": corpus.corpus_hash},
        spec={k: v for k, v in spec.to_dict().items() if k in ("backend", "metric", "hnsw_m", "ef_construction",
                                                                "ef_search")},
        bytes_per_vector=memory, deadline_ms=DEFAULT_DEADLINE_MS, hedge_ms=hedge_ms, rows=tuple(rows), kill=kill,
        notes=NOTES,
        wall_s=round(time.perf_counter() - started, 1))


def bytes_per_vector(vectors: np.ndarray) -> dict[str, float]:
    """Memory a vector costs in the two layouts the capacity plan scales: float32 HNSW (M=16, what the shards
    above hold) and the 8-bit layout (faiss HNSW over sq8 codes, full width), as CollectionIndex counts it."""
    out = {}
    for name, spec in (("hnsw_float32", IndexSpec(backend="hnsw")),
                       ("faiss_hnsw_sq8", IndexSpec(backend="faiss_hnsw", prefix_quant="sq8"))):
        index = CollectionIndex.from_arrays(vectors, spec=spec)
        out[name] = round(index.index_bytes / len(vectors), 1)
        index.close()
    return out


def _in_process(index: ShardedIndex) -> SearchOne:
    return lambda q: index.search(q[None], K).ids[0]


def _start_remote(spec: IndexSpec, vectors: np.ndarray, ids: np.ndarray, n: int, replicas: int,
                  info: ClusterInfo, directory: Path, hedge_ms: float | None) -> tuple[RayShardedIndex, float]:
    spread: Spread = "strict" if info.num_nodes >= replicas else "soft"  # one machine: replicas share it
    placement = Placement(mode="ray", replicas=replicas, spread=spread)
    started = time.perf_counter()
    remote = RayShardedIndex.create(spec, vectors.shape[1], placement, info, directory=directory,
                                    source=InMemoryVectorSource(vectors, ids=ids), hedge_ms=hedge_ms)
    return remote, time.perf_counter() - started


def _ray_row(remote: RayShardedIndex, queries: np.ndarray, truth: np.ndarray, client_counts: Sequence[int],
             local_found: list[np.ndarray], local_points: list[LoadPoint], local_single: _Timed, start_s: float,
             n: int, replicas: int) -> ClusterRow:
    fanout_ms: list[float] = []

    def search_one(q: np.ndarray) -> np.ndarray:
        hits = remote.search(q[None], K)
        fanout_ms.append(hits.fanout_ms)
        return hits.ids[0]

    found, points, single = _measure(search_one, queries, client_counts)
    identical = all(np.array_equal(a, b) for a, b in zip(found, local_found, strict=True))
    overhead = float(np.percentile(single.latencies_ms, 50) - np.percentile(local_single.latencies_ms, 50))
    ratios = tuple(round(p.qps / lp.qps, 3) for p, lp in zip(points, local_points, strict=True))
    single_fanout = fanout_ms[WARMUP_QUERIES : WARMUP_QUERIES + len(queries)]
    return ClusterRow("ray", n, replicas, round(recall_at_k(found, truth), 4), identical, tuple(points),
                      round(float(np.percentile(single_fanout, 50)), 3), round(overhead, 3), ratios,
                      remote.nbytes, round(start_s, 2))


def kill_run(remote: RayShardedIndex, queries: np.ndarray, expected: list[np.ndarray], *, clients: int,
             passes: int = 3) -> KillRun:
    """Search from `clients` threads; after a third of the calls, kill replica 0 of shard 0 (restart allowed)."""
    import ray

    total = len(queries) * passes
    kill_at = total // 3
    done = iter(range(total))
    lock = threading.Lock()
    outcome: dict[int, str] = {}
    finished: dict[int, float] = {}
    state: dict[str, float] = {}

    def search_one(q: np.ndarray) -> np.ndarray:
        with lock:
            i = next(done)
        if i == kill_at:
            state["kill_t"] = time.perf_counter()
            ray.kill(remote.hosts[0][0], no_restart=False)
        try:
            hits = remote.search(q[None], K)
            outcome[i] = "partial" if hits.partial else "ok"
            return hits.ids[0]
        except Exception as exc:  # noqa: BLE001 - counted: what a caller would have seen
            outcome[i] = type(exc).__name__
            return np.zeros(0, np.int64)
        finally:
            finished[i] = time.perf_counter()

    run_started = time.perf_counter()
    timed = run_load(search_one, queries, clients=clients, passes=passes)
    run_ended = run_started + timed.wall_s
    kill_t = state["kill_t"]
    recovered = _recovery_s(remote, kill_t)
    wrong = sum(1 for i, f in enumerate(timed.found) if outcome.get(i) == "ok"
                and not np.array_equal(f, expected[i % len(queries)]))
    early = np.array([finished[i] < kill_t for i in range(total)])  # by completion time, not by index
    before, after = timed.latencies_ms[early], timed.latencies_ms[~early]
    return KillRun(remote.num_shards, len(remote.hosts[0]), clients, total, int(early.sum()),
                   sum(1 for v in outcome.values() if v not in ("ok", "partial")),
                   sum(1 for v in outcome.values() if v == "partial"), wrong,
                   _point(clients, _Timed([], before, kill_t - run_started)),
                   _point(clients, _Timed([], after, run_ended - kill_t)),
                   round(float(after.max()), 3), recovered)


def _recovery_s(remote: RayShardedIndex, kill_t: float | None, timeout_s: float = 120.0) -> float | None:
    """Seconds from the kill until replica (0, 0) is neither stale nor suspect (the repair thread's work)."""
    if kill_t is None:
        return None
    while time.perf_counter() - kill_t < timeout_s:  # polled: the repair thread works meanwhile
        remote.repair()
        back = (0, 0) not in remote.stale and (0, 0) not in remote.suspect
        if back and replica_is_current(remote.hosts[0][0], remote.watermark):
            return round(time.perf_counter() - kill_t, 2)
        time.sleep(0.1)
    return None
