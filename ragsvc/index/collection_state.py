"""The in-memory parts of a CollectionIndex and how they are built, trained and updated together.

Either `staging` is set (an exact full-width store, used until there is enough data to train) or `ann` is
(the sharded prefix index), with `rotation` and `rescorer` present when the spec sets Matryoshka `dims`.
Vectors go into the ANN structure as rotated prefixes and into the rescorer as rotated full width.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ragsvc.embed.rotation import PcaRotation
from ragsvc.index.exact_shard import ExactShard
from ragsvc.index.factory import make_shard, needs_training, shard_metric
from ragsvc.index.rescore import RescoreStore
from ragsvc.index.shard import exact_scores
from ragsvc.index.sharded_index import ShardedIndex, shard_of
from ragsvc.index.spec import IndexSpec

_ADD_BATCH = 16384
_TRAIN_SAMPLE_MAX = 50_000


@dataclass(slots=True)
class CollectionState:
    spec: IndexSpec
    dim: int
    staging: ExactShard | None = None
    ann: ShardedIndex | None = None
    rotation: PcaRotation | None = None
    rescorer: RescoreStore | None = None
    watermark: int = 0
    trained_on: int = 0
    generation: int = 0

    @property
    def width(self) -> int:
        return self.spec.dims or self.dim

    @property
    def rescore_offset(self) -> int:
        """First dimension the rescoring vectors hold: d' when the prefix part of scores comes from the ANN."""
        return self.width if self.spec.rescore_tail_only else 0

    @property
    def count(self) -> int:
        if self.staging is not None:
            return len(self.staging)
        return len(self.rescorer) if self.rescorer is not None else len(self.ann or ())

    @property
    def nbytes(self) -> int:
        parts = (self.staging, self.ann, self.rotation, self.rescorer)
        return sum(int(p.nbytes) for p in parts if p is not None)

    def add_trained(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add full-width vectors (n, dim) to the trained structures, in bounded batches."""
        assert self.ann is not None
        for start in range(0, len(ids), _ADD_BATCH):
            batch_ids, batch = ids[start : start + _ADD_BATCH], vectors[start : start + _ADD_BATCH]
            rotated = self.rotation.apply(batch) if self.rotation is not None else batch  # (b, dim)
            if self.rescorer is not None:
                self.rescorer.add(batch_ids, np.ascontiguousarray(rotated[:, self.rescore_offset :]))
            self.ann.add(batch_ids, np.ascontiguousarray(rotated[:, : self.width]))  # (b, d')
        if len(ids):
            self.watermark = max(self.watermark, int(ids.max()))

    def delete(self, ids: np.ndarray) -> None:
        if self.staging is not None:
            self.staging.delete(ids)
            return
        assert self.ann is not None
        self.ann.delete(ids)
        if self.rescorer is not None:
            self.rescorer.delete(ids)

    def all_ids(self) -> np.ndarray:
        """Every live id (used only to reconcile deletes after a crash: may be slow for hnswlib)."""
        if self.staging is not None:
            return self.staging.ids.copy()
        if self.rescorer is not None:
            return self.rescorer.ids.copy()
        assert self.ann is not None
        return np.concatenate([shard.live_ids() for shard in self.ann.shards])

    def exact_subset(self, query: np.ndarray, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found ids (m,), scores (m,)) of every allowed id the full-width shards hold, scored exactly.

        hnswlib and numpy shards hand back their stored vectors; faiss shards are asked for all allowed ids
        through their selector (exact for Flat, IVF probes every list when needed, HNSW reconstructs).
        """
        assert self.ann is not None
        owner = shard_of(allowed, len(self.ann.shards))
        found, scores = [], []
        for i, shard in enumerate(self.ann.shards):
            subset = allowed[owner == i]
            if not len(subset):
                continue
            get = getattr(shard, "get", None)
            if get is not None:
                ids, vectors = get(subset)
                found.append(ids)
                scores.append(exact_scores(query[None, :], vectors, shard_metric(self.spec))[0])  # (m,)
            else:
                hits = shard.search(query[None, :], len(subset), allowed_ids=subset)  # (1, m)
                keep = hits.ids[0] >= 0
                found.append(hits.ids[0][keep])
                scores.append(hits.scores[0][keep])
        if not found:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        return np.concatenate(found), np.concatenate(scores).astype(np.float32)


def empty_state(spec: IndexSpec, dim: int) -> CollectionState:
    """Staging when the spec must be trained first; otherwise empty full-width shards, ready for adds."""
    if needs_training(spec):
        return CollectionState(spec, dim, staging=ExactShard(dim, metric=shard_metric(spec)))
    ann = ShardedIndex([make_shard(spec, dim) for _ in range(spec.num_shards)])
    return CollectionState(spec, dim, ann=ann)


def train_state(spec: IndexSpec, dim: int, ids: np.ndarray, vectors: np.ndarray, *, watermark: int,
                generation: int) -> CollectionState:
    """Fit rotation, rescoring scales and shard training on a sample of `vectors` (n, dim), then add all."""
    rng = np.random.default_rng(0)
    pick = np.sort(rng.choice(len(vectors), size=min(len(vectors), _TRAIN_SAMPLE_MAX), replace=False))
    sample = vectors[pick]  # (s, dim)
    rotation = PcaRotation.fit(sample) if spec.dims is not None and spec.rotate else None
    rotated = rotation.apply(sample) if rotation is not None else sample  # (s, dim)
    rescorer = None
    if spec.dims is not None:
        held = dim - (spec.dims if spec.rescore_tail_only else 0)
        rescorer = RescoreStore(held, dtype=spec.rescore_dtype, metric=shard_metric(spec))
    width = spec.dims or dim
    prefix = np.ascontiguousarray(rotated[:, :width])  # (s, d')
    ann = ShardedIndex([make_shard(spec, width, train_sample=prefix) for _ in range(spec.num_shards)])
    state = CollectionState(spec, dim, ann=ann, rotation=rotation, rescorer=rescorer, watermark=watermark,
                            trained_on=len(vectors), generation=generation)
    state.add_trained(ids, vectors)
    return state
