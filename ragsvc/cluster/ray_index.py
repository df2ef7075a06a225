"""RayShardedIndex: the `ShardedIndex` interface over shard replicas hosted in Ray actors.

Same routing (`shard_of`), same per-shard search code (each actor runs a `ShardHost` around the index
layer's own `Shard`), same exact merge (`merge_hits`): for the same shard contents the results are identical
to in process. What Ray adds is handled here:

- **Replicas.** A search asks one replica per shard (rotating, so replicas share the load) through `fan_out`:
  a dead, restarting or late replica is replaced by the next; with none left the shard is missing, and the
  search fails (NotReady) unless the caller passed `allow_partial`, which returns the other shards' hits with
  `partial` set and the shard named. Never silently fewer hits.
- **Freshness.** Every answer carries the replica's watermark; one below the index's committed watermark is
  refused (it restarted from older files or missed a write) and the replica is marked stale: it gets no
  searches until it has caught up. A replica that was still working when its shard was answered by another is
  marked suspect: it is asked last until a ping shows it answers and is current.
- **Writes.** The catalog commits first (the API process is its single writer); then `add`/`delete` fan out to
  every fresh replica of the owning shards and advance the other shards' watermarks (a stale one is not
  written to: it replays). A replica that fails a write is marked stale and, once reachable, `repair` replays
  the catalog (`source`) above its watermark and drops ids the catalog deleted. Ray restarts a dead actor
  (`max_restarts`); its constructor reloads the last saved files, so a restart costs a replay of what came
  after the save, not a rebuild.

Writes and repairs are serialised by one lock; searches take no lock and may run from many threads. A
background thread (`repair_interval_s`) repairs stale and suspect replicas, so one that Ray restarted comes
back without waiting for the next write.
"""

from __future__ import annotations

import itertools
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ragsvc.cluster.catch_up import PING_TIMEOUT_S, CatchUp, Transform, catch_up, replica_is_current
from ragsvc.cluster.fanout import fan_out
from ragsvc.cluster.placement import DEFAULT_DEADLINE_MS, Placement, check_deadline_ms
from ragsvc.cluster.results import ClusterHits
from ragsvc.cluster.runtime import ClusterInfo
from ragsvc.cluster.shard_host import ShardHost
from ragsvc.errors import NotReady
from ragsvc.index.factory import shard_extension
from ragsvc.index.results import ShardHits
from ragsvc.index.shard import as_ids, check_add, check_queries
from ragsvc.index.sharded_index import merge_hits, shard_of
from ragsvc.index.source import VectorSource
from ragsvc.index.spec import IndexSpec

logger = logging.getLogger(__name__)

HEDGE_FRACTION = 0.5
WRITE_TIMEOUT_S = 120.0


class RayShardedIndex:
    def __init__(self, hosts: list[list[Any]], *, spec: IndexSpec, dim: int, source: VectorSource | None = None,
                 transform: Transform | None = None, deadline_ms: float = DEFAULT_DEADLINE_MS,
                 hedge_ms: float | None = None, name: str = "shard") -> None:
        if not hosts or any(not replicas for replicas in hosts):
            raise ValueError("a RayShardedIndex needs at least one shard with at least one replica")
        self.hosts, self.spec, self.dim = hosts, spec, dim
        self.source, self.transform = source, transform
        self.deadline_ms = check_deadline_ms(deadline_ms)
        self.hedge_ms = hedge_ms
        """When a shard's next replica is also asked; None: half of each request's deadline."""
        self.shard_names = tuple(f"{name}-{i}" for i in range(len(hosts)))
        self.watermark = 0
        self.stale: set[tuple[int, int]] = set()
        """(shard, replica) that failed, refused or missed a write: no searches until `repair` catches them up."""
        self.suspect: set[tuple[int, int]] = set()
        """(shard, replica) that answered too late: asked last until a ping answers."""
        self._lock = threading.RLock()
        self._turn = itertools.count()
        self._stop = threading.Event()
        self._repairer: threading.Thread | None = None

    @classmethod
    def create(cls, spec: IndexSpec, width: int, placement: Placement, cluster: ClusterInfo, *,
               directory: Path | None = None, source: VectorSource | None = None, transform: Transform | None = None,
               train_sample: np.ndarray | None = None, deadline_ms: float = DEFAULT_DEADLINE_MS,
               hedge_ms: float | None = None, max_restarts: int = 10, name: str = "shard",
               start_timeout_s: float = 120.0, repair_interval_s: float = 1.0) -> RayShardedIndex:
        """Start `spec.num_shards` x `placement.replicas` actors, load their files, catch them up to `source`."""
        import ray

        placement.check_nodes(cluster.num_nodes)
        actor = ray.remote(ShardHost)
        hosts: list[list[Any]] = []
        for s in range(spec.num_shards):
            replicas = []
            for r in range(placement.replicas):
                path = None if directory is None else str(directory / f"{name}-{s}-r{r}.{shard_extension(spec)}")
                options = dict(num_cpus=placement.cpus_per_replica, max_restarts=max_restarts, max_task_retries=0,
                               scheduling_strategy=_strategy(placement, cluster, s, r))
                replicas.append(actor.options(**options).remote(spec, width, path=path, train_sample=train_sample))
            hosts.append(replicas)
        index = cls(hosts, spec=spec, dim=width, source=source, transform=transform, deadline_ms=deadline_ms,
                    hedge_ms=hedge_ms, name=name)
        index._start(start_timeout_s)
        if repair_interval_s > 0:
            index.start_repairs(repair_interval_s)
        return index

    def _start(self, timeout_s: float) -> None:
        import ray
        from ray.exceptions import GetTimeoutError, RayError

        refs = [h.ping.remote() for replicas in self.hosts for h in replicas]
        try:
            marks = ray.get(refs, timeout=timeout_s)
        except (GetTimeoutError, RayError) as exc:
            self.close()
            raise NotReady(f"shard actors did not start within {timeout_s:.0f} s ({exc}); check the cluster has "
                           "room (`ray status`) or lower num_shards or placement replicas") from exc
        committed = self.source.max_chunk_id() if self.source is not None else max(marks)
        self.watermark = committed
        self.stale = {pos for pos, mark in zip(self._positions(), marks, strict=True) if mark < committed}
        if self.stale:
            self.repair()

    # -- the ShardedIndex interface ------------------------------------------------------------------------

    def __len__(self) -> int:
        return sum(self._stats()[0])

    @property
    def nbytes(self) -> int:
        return sum(self._stats()[1])

    @property
    def num_shards(self) -> int:
        return len(self.hosts)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Apply rows the catalog has already committed to every replica of their shards."""
        ids, vectors = check_add(ids, vectors, self.dim)
        if not len(ids):
            return
        with self._lock:
            base, new = self.watermark, max(self.watermark, int(ids.max()))
            owner = shard_of(ids, self.num_shards)
            refs = {}
            for s, r in self._fresh_positions():  # stale replicas replay from the catalog instead
                rows = np.flatnonzero(owner == s)
                refs[(s, r)] = self.hosts[s][r].apply.remote(ids[rows], vectors[rows], base=base, new=new)
            self._settle(refs, new)
            self.watermark = new

    def delete(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if not len(ids):
            return
        with self._lock:
            owner = shard_of(ids, self.num_shards)
            refs = {(s, r): self.hosts[s][r].delete.remote(ids[owner == s], base=self.watermark)
                    for s, r in self._fresh_positions() if np.any(owner == s)}
            self._settle(refs, self.watermark)

    def search(self, queries: np.ndarray, k: int, *, allowed_ids: np.ndarray | None = None,
               ef_search: int | None = None, deadline_ms: float | None = None,
               allow_partial: bool = False) -> ClusterHits:
        """queries (q, dim) -> the exact merge of one replica's top-k per shard; see the module doc."""
        queries = check_queries(queries, self.dim, k)
        deadline_s = check_deadline_ms(self.deadline_ms if deadline_ms is None else deadline_ms) / 1000.0
        allowed = as_ids(allowed_ids)
        per_shard = [None] * self.num_shards if allowed is None else _split(allowed, self.num_shards)
        committed, turn = self.watermark, next(self._turn)

        def launch(s: int, r: int) -> Any:
            return self.hosts[s][r].search.remote(queries, k, per_shard[s], ef_search)

        def accept(s: int, r: int, value: tuple[np.ndarray, np.ndarray, int]) -> bool:
            return value[2] >= committed

        hedge_s = deadline_s * HEDGE_FRACTION if self.hedge_ms is None else min(self.hedge_ms / 1000.0, deadline_s)
        result = fan_out(self._order(turn), launch, accept, deadline_s=deadline_s, hedge_s=hedge_s)
        self.stale |= result.failed
        self.suspect |= result.late
        missing = tuple(self.shard_names[s] for s in range(self.num_shards) if s not in result.answers)
        if missing and not allow_partial:
            raise NotReady(f"no replica of {', '.join(missing)} answered within {deadline_s * 1000:.0f} ms (dead, "
                           "restarting or behind the catalog); retry, raise deadline_ms, or ask for a partial answer "
                           "(allow_partial) to get the other shards' hits flagged partial",
                           detail={"missing_shards": list(missing)})
        answered = [result.answers[s] for s in sorted(result.answers)]
        merged = merge_hits([ShardHits(ids, scores) for _, (ids, scores, _) in answered], k) if answered else \
            ShardHits(np.full((len(queries), k), -1, np.int64), np.full((len(queries), k), -np.inf, np.float32))
        replicas = tuple(result.answers[s][0] if s in result.answers else -1 for s in range(self.num_shards))
        return ClusterHits(merged.ids, merged.scores, bool(missing), missing, replicas, result.elapsed_ms)

    def save(self) -> None:
        """Every reachable, fresh replica writes its file and sidecar (where it was given a path)."""
        import ray
        from ray.exceptions import RayError

        with self._lock:
            for s, r in self._positions():
                if (s, r) in self.stale:
                    continue
                try:
                    ray.get(self.hosts[s][r].save.remote(), timeout=WRITE_TIMEOUT_S)
                except (RayError, ValueError) as exc:
                    logger.warning("%s replica %d could not save (%s)", self.shard_names[s], r, exc)

    def close(self) -> None:
        import ray

        self._stop.set()
        if self._repairer is not None:
            self._repairer.join()
            self._repairer = None
        for replicas in self.hosts:
            for handle in replicas:
                ray.kill(handle, no_restart=True)

    # -- catching up -----------------------------------------------------------------------------------

    def repair(self) -> set[tuple[int, int]]:
        """Catch up every stale or suspect replica that answers; return the ones still out of searches."""
        with self._lock:
            for s, r in sorted(self.stale | self.suspect):
                if self._catch_up(s, r):
                    self.stale.discard((s, r))
                    self.suspect.discard((s, r))
            return set(self.stale)

    def refresh(self) -> set[tuple[int, int]]:
        """Ping every replica in rotation: one that is behind (Ray restarted it) or silent becomes stale before a
        search meets it; then repair. Returns the replicas still out of searches."""
        import ray

        with self._lock:
            refs = {self.hosts[s][r].ping.remote(): (s, r) for s, r in self._positions() if (s, r) not in self.stale}
            ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=PING_TIMEOUT_S)
            marks = dict.fromkeys(refs.values(), -1)
            for ref in ready:
                try:
                    marks[refs[ref]] = int(ray.get(ref))
                except ray.exceptions.RayError:
                    continue
            self.stale |= {pos for pos, mark in marks.items() if mark < self.watermark}
            return self.repair()

    def start_repairs(self, interval_s: float) -> None:
        """Refresh and repair in a daemon thread every `interval_s` (one ping per replica each time)."""
        def loop() -> None:
            while not self._stop.wait(interval_s):
                try:
                    self.refresh()
                except Exception:  # noqa: BLE001 - the loop must outlive one failed round; it is logged
                    logger.exception("replica repair failed; retrying in %.1f s", interval_s)

        if self._repairer is None:
            self._repairer = threading.Thread(target=loop, name="replica-repair", daemon=True)
            self._repairer.start()

    def _catch_up(self, s: int, r: int) -> bool:
        if (s, r) not in self.stale:  # only suspect (slow): back once a ping shows it answers and is current
            return replica_is_current(self.hosts[s][r], self.watermark)
        if self.source is None:
            return False  # nothing to replay from: the replica stays out of searches
        return catch_up(self.hosts[s][r], CatchUp(shard=s, num_shards=self.num_shards, dim=self.dim,
                                                  watermark=self.watermark, name=self.shard_names[s]),
                        self.source, self.transform)

    # -- helpers ---------------------------------------------------------------------------------------

    def _positions(self) -> list[tuple[int, int]]:
        return [(s, r) for s, replicas in enumerate(self.hosts) for r in range(len(replicas))]

    def _fresh_positions(self) -> list[tuple[int, int]]:
        return [pos for pos in self._positions() if pos not in self.stale]

    def _order(self, turn: int) -> list[list[int]]:
        """Per shard, its fresh replicas from a rotating offset (replicas share the searches), suspects last."""
        order = []
        for s, replicas in enumerate(self.hosts):
            n = len(replicas)
            fresh = [r for r in ((turn + i) % n for i in range(n)) if (s, r) not in self.stale]
            order.append(sorted(fresh, key=lambda r: (s, r) in self.suspect))  # stable: rotation kept within
        return order

    def _settle(self, refs: dict[tuple[int, int], Any], new: int) -> None:
        """Wait for a write's acknowledgements; replicas that failed or are behind become stale and replay."""
        import ray
        from ray.exceptions import GetTimeoutError, RayError

        for pos, ref in refs.items():
            try:
                mark = int(ray.get(ref, timeout=WRITE_TIMEOUT_S))
            except (GetTimeoutError, RayError):
                mark = -1
            if mark < new:
                self.stale.add(pos)
        if self.stale and self.source is not None:
            self.repair()

    def _stats(self) -> tuple[list[int], list[int]]:
        """(live vectors, bytes) per shard, from its first fresh replica."""
        import ray

        counts, sizes = [], []
        for s, order in enumerate(self._order(0)):
            if not order:
                raise NotReady(f"{self.shard_names[s]} has no fresh replica; wait for repair or add nodes")
            count, size, _ = ray.get(self.hosts[s][order[0]].stats.remote(), timeout=WRITE_TIMEOUT_S)
            counts.append(int(count))
            sizes.append(int(size))
        return counts, sizes


def _split(allowed: np.ndarray, num_shards: int) -> list[np.ndarray | None]:
    owner = shard_of(allowed, num_shards)
    return [allowed[owner == i] for i in range(num_shards)]


def _strategy(placement: Placement, cluster: ClusterInfo, s: int, r: int) -> Any:
    if placement.spread == "soft":
        return "SPREAD"
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node_id=cluster.node_ids[(s + r) % cluster.num_nodes], soft=False)
