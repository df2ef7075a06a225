"""The benchmark's kill run at test size: 8 client threads, one replica killed mid-load (Ray restarts it)."""

from __future__ import annotations

import numpy as np
import pytest

from ragsvc.bench.cluster import kill_run, run_load
from ragsvc.cluster.placement import Placement
from ragsvc.cluster.ray_index import RayShardedIndex
from ragsvc.cluster.shard_host import write_replica_files
from ragsvc.index.factory import make_shard
from ragsvc.index.memory_source import InMemoryVectorSource
from ragsvc.index.sharded_index import ShardedIndex
from ragsvc.index.spec import IndexSpec

DIM = 16


@pytest.mark.slow
def test_killing_a_replica_under_load_loses_no_query_and_it_recovers(cluster, tmp_path):
    spec = IndexSpec(backend="hnsw", num_shards=2)
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((1000, DIM)).astype(np.float32)
    ids = np.arange(1, 1001, dtype=np.int64)
    local = ShardedIndex([make_shard(spec, DIM) for _ in range(2)])
    local.add(ids, vectors)
    for s, shard in enumerate(local.shards):
        for r in range(2):
            write_replica_files(shard, tmp_path / f"shard-{s}-r{r}.hnsw", watermark=1000)
    remote = RayShardedIndex.create(spec, DIM, Placement(mode="ray", replicas=2, spread="soft"), cluster,
                                    directory=tmp_path, source=InMemoryVectorSource(vectors, ids=ids),
                                    hedge_ms=200)
    try:
        queries = rng.standard_normal((60, DIM)).astype(np.float32)
        expected = run_load(lambda q: local.search(q[None], 10).ids[0], queries, clients=1).found
        result = kill_run(remote, queries, expected, clients=8)
        assert result.num_queries == 180
        assert result.errors == 0 and result.partial == 0 and result.wrong == 0
        assert result.before.num_queries + result.after.num_queries == 180
        assert result.recovered_s is not None  # restarted, reloaded its files, back in rotation
    finally:
        remote.close()
        local.close()
