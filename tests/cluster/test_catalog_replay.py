"""Ray replicas following a real duckdb catalog: commit first, fan out, and replay what a replica missed."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest

from ragsvc.cluster.placement import Placement
from ragsvc.cluster.ray_index import RayShardedIndex
from ragsvc.cluster.writer import apply_committed
from ragsvc.index.factory import make_shard
from ragsvc.index.sharded_index import ShardedIndex
from ragsvc.index.spec import IndexSpec
from ragsvc.store.catalog import Catalog
from ragsvc.store.records import CollectionRecord, PreparedChunk, PreparedDocument
from tests.cluster.ray_kills import kill_for_good

ray = pytest.importorskip("ray")

DIM = 12
SPEC = IndexSpec(backend="exact", num_shards=2)


def _document(doc_id: str, seed: int, num_chunks: int = 3) -> PreparedDocument:
    rng = np.random.default_rng(seed)
    chunks = []
    for i in range(num_chunks):
        text = f"{doc_id} chunk {i} seed {seed}"
        chunks.append(PreparedChunk(text, 0, len(text), {}, hashlib.sha256(text.encode()).hexdigest(),
                                    rng.standard_normal(DIM).astype(np.float32)))
    return PreparedDocument(doc_id, None, f"h{seed}", {}, " ".join(c.text for c in chunks), chunks)


@pytest.fixture
def catalog(tmp_path):
    catalog = Catalog(tmp_path / "catalog.duckdb")
    catalog.create_collection(CollectionRecord("c", "test-embedder", DIM, SPEC, 64, 0))
    yield catalog
    catalog.close()


def _write(catalog: Catalog, index, docs: list[PreparedDocument]) -> None:
    apply_committed(index, catalog.write_documents("c", docs, embedder_id="test-embedder"))


def _from_catalog(catalog: Catalog) -> ShardedIndex:
    """The in-process oracle, rebuilt from what the catalog holds now."""
    local = ShardedIndex([make_shard(SPEC, DIM) for _ in range(SPEC.num_shards)])
    for ids, vectors in catalog.vector_source("c").iter_vectors():
        local.add(ids, vectors)
    return local


def _pid(handle) -> int:
    return ray.get(handle.__ray_call__.remote(lambda host: os.getpid()), timeout=120)


@pytest.mark.slow
def test_replicas_follow_the_catalog_and_replay_what_they_missed(cluster, catalog, tmp_path):
    _write(catalog, _Null(), [_document(f"d{i}", i) for i in range(20)])  # committed before the index
    remote = RayShardedIndex.create(SPEC, DIM, Placement(mode="ray", replicas=2, spread="soft"), cluster,
                                    source=catalog.vector_source("c"), directory=tmp_path / "shards",
                                    repair_interval_s=0)
    try:
        queries = np.random.default_rng(99).standard_normal((8, DIM)).astype(np.float32)
        assert remote.stale == set()  # every replica started empty and replayed the catalog at start
        np.testing.assert_array_equal(remote.search(queries, 15).ids, _from_catalog(catalog).search(queries, 15).ids)
        remote.save()
        old = _pid(remote.hosts[1][0])
        ray.kill(remote.hosts[1][0], no_restart=False)
        _write(catalog, remote, [_document(f"d{i}", 100 + i) for i in range(5)])  # replaces d0..d4
        _write(catalog, remote, [_document(f"n{i}", 200 + i) for i in range(10)])
        for _ in range(200):  # the new process (a call mid-restart fails; later ones queue)
            try:
                if _pid(remote.hosts[1][0]) != old:
                    break
            except ray.exceptions.ActorUnavailableError:
                continue
        assert remote.refresh() == set()
        kill_for_good(remote.hosts[1][1])  # shard 1 now answers from the restarted replica only
        want = _from_catalog(catalog).search(queries, 40)
        hits = remote.search(queries, 40)
        assert hits.replicas[1] == 0
        np.testing.assert_array_equal(hits.ids, want.ids)
        np.testing.assert_allclose(hits.scores, want.scores, atol=1e-5)
        assert len(remote) == catalog.vector_source("c").count() == 90
    finally:
        remote.close()


class _Null:
    """Stands in for an index that does not exist yet: rows committed before it are replayed at its start."""

    def add(self, ids, vectors) -> None:
        pass

    def delete(self, ids) -> None:
        pass
