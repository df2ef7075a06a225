"""A collection whose placement is `ray`: the CollectionIndex interface the store uses, over RayShardedIndex.

The store opens every collection through `open_collection_index`: `in_process` placements get the usual
`CollectionIndex`; `ray` placements get a `RayCollectionIndex`, whose shards are replicated Ray actors that
load their saved files and replay the catalog above their watermark. Nothing falls back silently: a ray
placement in a process that joined no cluster is refused (`check_placement` when the collection is created,
`open_collection_index` when it is opened), with the setting to change in the message.

What a ray placement serves: layouts that need no training (no Matryoshka `dims`, no IVF/PQ or scalar-quantised
FAISS), since a shard actor holds one shard and nothing fitted over the whole collection. Searches are one
query at a time like CollectionIndex's, with the fan-out deadline and replica hedging of RayShardedIndex; a
shard no replica answers fails the search (NotReady, 503) naming the shard, never fewer hits.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from ragsvc.cluster.ray_index import RayShardedIndex
from ragsvc.cluster.runtime import ClusterInfo
from ragsvc.errors import InvalidInput, NotReady
from ragsvc.index.collection_index import CollectionIndex
from ragsvc.index.factory import needs_training
from ragsvc.index.results import IndexResult
from ragsvc.index.shard import PAD_ID
from ragsvc.index.source import VectorSource
from ragsvc.index.spec import IndexSpec
from ragsvc.types import ServedBy

NO_CLUSTER = ("set RAGSVC_CLUSTER__ADDRESS (local, auto or ray://host:port) and restart the server, or create the "
              "collection with placement mode in_process")


def check_placement(spec: IndexSpec, cluster: ClusterInfo | None) -> None:
    """Refuse (InvalidInput, before anything is written) a ray placement this process cannot host."""
    placement = spec.placement
    if placement.mode != "ray":
        return
    if cluster is None:
        raise InvalidInput(f"placement mode ray needs a Ray cluster and this server has none; {NO_CLUSTER}",
                           detail={"param": "index.placement.mode"})
    if needs_training(spec):
        raise InvalidInput(f"placement mode ray serves layouts that need no training (hnsw, exact, faiss_flat, "
                           f"faiss_hnsw without prefix_quant, no dims); backend {spec.backend} with dims={spec.dims} "
                           f"and prefix_quant={spec.prefix_quant} must run in_process", detail={"param": "index"})
    placement.check_nodes(cluster.num_nodes)


class RayCollectionIndex:
    """`CollectionIndex`'s interface (add, delete, search, save, close, len, index_bytes) over Ray actors."""

    def __init__(self, remote: RayShardedIndex, spec: IndexSpec, dim: int) -> None:
        self.remote, self.spec, self.dim = remote, spec, dim
        self.served_by = ServedBy.ann(backend=spec.backend, num_shards=spec.num_shards, dims=dim,
                                      replicas=spec.placement.replicas)

    @classmethod
    def open(cls, directory: Path, spec: IndexSpec, dim: int, source: VectorSource,
             cluster: ClusterInfo) -> RayCollectionIndex:
        """Start the replicas (each loads `directory/shard-<s>-r<r>.*` when saved) and catch them up to `source`."""
        check_placement(spec, cluster)
        directory.mkdir(parents=True, exist_ok=True)
        remote = RayShardedIndex.create(spec, dim, spec.placement, cluster, directory=directory, source=source,
                                        deadline_ms=cluster.deadline_ms, hedge_ms=cluster.hedge_ms)
        return cls(remote, spec, dim)

    def __len__(self) -> int:
        return len(self.remote)

    @property
    def index_bytes(self) -> int:
        return self.remote.nbytes

    @property
    def watermark(self) -> int:
        return self.remote.watermark

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.remote.add(ids, vectors)

    def delete(self, ids: np.ndarray) -> None:
        self.remote.delete(ids)

    def search(self, query: np.ndarray, k: int, *, allowed_ids: np.ndarray | None = None, dims: int | None = None,
               ef_search: int | None = None, deadline_ms: float | None = None,
               allow_partial: bool = False) -> IndexResult:
        """Top-k ids and scores for one query vector (dim,), merged exactly from one replica per shard. A shard no
        replica answers within `deadline_ms` fails the search (NotReady) unless `allow_partial`; then its name
        is in `served_by.missing_shards`."""
        if dims is not None and dims != self.dim:
            raise InvalidInput(f"this collection is served by Ray shards at full width {self.dim}, so a dims={dims} "
                               "override cannot be served; omit dims")
        started = time.perf_counter()
        hits = self.remote.search(np.asarray(query, dtype=np.float32).reshape(1, -1), k, allowed_ids=allowed_ids,
                                  ef_search=ef_search, deadline_ms=deadline_ms, allow_partial=allow_partial)
        ids, scores = hits.ids[0], hits.scores[0]  # (k,)
        keep = ids != PAD_ID
        timings = {"fanout_ms": hits.fanout_ms, "ann_ms": (time.perf_counter() - started) * 1000.0}
        served = replace(self.served_by, missing_shards=hits.missing_shards) if hits.partial else self.served_by
        return IndexResult(ids[keep], scores[keep], timings, served)

    def save(self) -> None:
        self.remote.save()

    def close(self) -> None:
        self.remote.close()


def open_collection_index(directory: Path, spec: IndexSpec, dim: int, source: VectorSource, *,
                          cluster: ClusterInfo | None) -> CollectionIndex | RayCollectionIndex:
    """The index a collection's placement asks for; a ray placement without a cluster is refused (503)."""
    if spec.placement.mode != "ray":
        return CollectionIndex.open(directory, spec, dim, source)
    if cluster is None:
        raise NotReady("this collection's placement is ray but this process joined no Ray cluster (`ragsvc serve` "
                       "joins the one RAGSVC_CLUSTER__ADDRESS names; the other CLI commands do not: ingest into and "
                       f"search this collection through the API); {NO_CLUSTER}")
    return RayCollectionIndex.open(directory / "ray", spec, dim, source, cluster)


__all__ = ["RayCollectionIndex", "check_placement", "open_collection_index"]
