"""Build or load the shard type an IndexSpec names, at the width the collection index gives it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ragsvc.index.exact_shard import ExactShard
from ragsvc.index.hnsw_shard import HnswShard
from ragsvc.index.manifest import ShardMeta
from ragsvc.index.shard import Shard, ShardMetric
from ragsvc.index.spec import IndexSpec

_EXTENSIONS = {"hnsw": "hnsw", "exact": "npz"}


def shard_metric(spec: IndexSpec) -> ShardMetric:
    """Cosine is inner product on normalised vectors."""
    return "l2" if spec.metric == "l2" else "ip"


def shard_extension(spec: IndexSpec) -> str:
    return _EXTENSIONS.get(spec.backend, "faiss")


def needs_training(spec: IndexSpec) -> bool:
    """Whether the index must see data before it can be built (rotation, quantiser scales, IVF centroids)."""
    from ragsvc.index.faiss_shard import faiss_needs_training

    return spec.dims is not None or faiss_needs_training(spec)


def make_shard(spec: IndexSpec, width: int, *, train_sample: np.ndarray | None = None) -> Shard:
    metric = shard_metric(spec)
    if spec.backend == "hnsw":
        return HnswShard(width, metric=metric, m=spec.hnsw_m, ef_construction=spec.ef_construction,
                         ef_search=spec.ef_search)
    if spec.backend == "exact":
        return ExactShard(width, metric=metric)
    from ragsvc.index.faiss_shard import FaissShard

    return FaissShard.create(spec, width, train_sample=train_sample)


def load_shard(spec: IndexSpec, width: int, path: Path, meta: ShardMeta) -> Shard:
    metric = shard_metric(spec)
    if spec.backend == "hnsw":
        return HnswShard.load(path, dim=width, metric=metric, ef_search=spec.ef_search,
                              num_deleted=meta.num_deleted or 0,
                              twins=np.asarray(meta.twins, np.int64).reshape(-1, 2),
                              hidden=np.asarray(meta.hidden, np.int64), twins_checked=meta.twins_checked)
    if spec.backend == "exact":
        return ExactShard.load(path, dim=width, metric=metric)
    from ragsvc.index.faiss_shard import FaissShard

    return FaissShard.load(path, spec=spec, dim=width, meta=meta)


def shard_meta(shard: Shard) -> ShardMeta:
    """What a shard needs recorded beside its native file (its own format cannot hold it)."""
    meta_of = getattr(shard, "manifest_meta", None)
    return meta_of() if callable(meta_of) else ShardMeta()
