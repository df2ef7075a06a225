"""ShardMeta: the typed view of a shard's manifest entry meta, written as the same JSON keys as before."""

from __future__ import annotations

import json

from ragsvc.index.manifest import ShardMeta


def test_each_backend_writes_only_its_own_keys():
    assert ShardMeta(num_deleted=0).to_dict() == {"num_deleted": 0}  # hnswlib: always recorded
    assert ShardMeta().to_dict() == {}  # faiss without deletes, exact
    assert ShardMeta(tombstones=(3, 9)).to_dict() == {"tombstones": [3, 9]}  # faiss HNSW


def test_round_trip_through_a_manifest_entry_ignores_the_shard_index():
    for meta in (ShardMeta(num_deleted=4), ShardMeta(), ShardMeta(tombstones=(3, 9))):
        entry = json.loads(json.dumps({"index": 1, **meta.to_dict()}))
        assert ShardMeta.from_dict(entry) == meta
