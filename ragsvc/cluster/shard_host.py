"""ShardHost: one replica of one shard, as it runs inside a Ray actor (plain Python: no Ray import here).

A host owns a `Shard` built by the index layer's own factory, so a shard searched through Ray is the same
structure, with the same search code, as one searched in process. It also owns a watermark: the highest chunk
id of the catalog it is known to cover. Writes carry the watermark the writer had before them (`base`); a
host whose own watermark is lower missed something (it restarted from older files, or a write timed out on
it), applies nothing and answers with its watermark so the writer replays the gap from the catalog. Every
search answer carries the watermark too, so the caller can refuse a replica that is behind instead of
merging fewer hits than the catalog holds.

Files: `save(path)` writes the native shard file, then a small JSON sidecar (`<path>.json`: watermark and the
shard's manifest meta) as the commit point; the constructor loads them when both exist, which is how a Ray
restart (the constructor runs again with the same arguments) comes back with everything up to the last save.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from ragsvc.index.atomic import atomic_write_bytes
from ragsvc.index.factory import load_shard, make_shard, shard_meta
from ragsvc.index.manifest import ShardMeta
from ragsvc.index.shard import Shard
from ragsvc.index.spec import IndexSpec

logger = logging.getLogger(__name__)

SIDECAR_VERSION = 1


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


class ShardHost:
    def __init__(self, spec: IndexSpec, width: int, *, path: str | None = None,
                 train_sample: np.ndarray | None = None) -> None:
        self.spec, self.width = spec, width
        self.path = None if path is None else Path(path)
        self.watermark = 0
        self.shard: Shard = self._load() or make_shard(spec, width, train_sample=train_sample)

    def _load(self) -> Shard | None:
        if self.path is None or not self.path.is_file() or not sidecar_path(self.path).is_file():
            return None
        try:
            side = json.loads(sidecar_path(self.path).read_bytes())
            if side.get("version") != SIDECAR_VERSION:
                raise ValueError(f"sidecar version {side.get('version')}, expected {SIDECAR_VERSION}")
            shard = load_shard(self.spec, self.width, self.path, ShardMeta.from_dict(side["meta"]))
        except Exception as exc:  # noqa: BLE001 - any damaged file means: start empty and replay everything
            logger.warning("shard files %s cannot be loaded (%s); starting empty, the writer replays the catalog",
                           self.path, exc)
            return None
        self.watermark = int(side["watermark"])
        return shard

    def apply(self, ids: np.ndarray, vectors: np.ndarray, *, base: int, new: int) -> int:
        """Add (insert or replace) if this host covers `base`; return its watermark (< base: replay needed)."""
        if self.watermark < base:
            return self.watermark
        if len(ids):
            self.shard.add(ids, vectors)
        self.watermark = max(self.watermark, new)
        return self.watermark

    def replay(self, ids: np.ndarray, vectors: np.ndarray, *, new: int) -> int:
        """Add rows the writer read back from the catalog above this host's watermark; cover up to `new`."""
        if len(ids):
            self.shard.add(ids, vectors)
        self.watermark = max(self.watermark, new)
        return self.watermark

    def delete(self, ids: np.ndarray, *, base: int) -> int:
        """Remove ids (idempotent); answer the watermark so a host that is behind gets reconciled."""
        self.shard.delete(ids)
        return self.watermark

    def search(self, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None,
               ef_search: int | None) -> tuple[np.ndarray, np.ndarray, int]:
        """(ids (q, k), scores (q, k), watermark): the shard's own top-k, exactly as in process."""
        hits = self.shard.search(queries, k, allowed_ids=allowed_ids, ef_search=ef_search)
        return hits.ids, hits.scores, self.watermark

    def live_ids(self) -> np.ndarray:
        return self.shard.live_ids()

    def stats(self) -> tuple[int, int, int]:
        """(live vectors, bytes in memory, watermark)."""
        return len(self.shard), int(self.shard.nbytes), self.watermark

    def save(self, path: str | None = None) -> int:
        """Write the shard file, then the sidecar (the commit point); return the watermark saved."""
        target = Path(path) if path is not None else self.path
        if target is None:
            raise ValueError("this shard host has no file path; pass one to save")
        write_replica_files(self.shard, target, watermark=self.watermark)
        return self.watermark

    def ping(self) -> int:
        return self.watermark


def write_replica_files(shard: Shard, path: Path, *, watermark: int) -> None:
    """The files a ShardHost loads: the native shard file, then its sidecar. Also how a shard built in process
    is handed to replicas (each replica reads its own copy, so replicas never share a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shard.save(path)
    side = {"version": SIDECAR_VERSION, "watermark": watermark, "meta": shard_meta(shard).to_dict()}
    atomic_write_bytes(sidecar_path(path), json.dumps(side, sort_keys=True).encode())
