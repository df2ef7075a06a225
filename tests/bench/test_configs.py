"""run_config on a tiny in-memory corpus: the rows it records, served_by rendered as its one-line form."""

from __future__ import annotations

import json

import numpy as np

from ragsvc.bench.configs import BenchConfig, run_config
from ragsvc.index.spec import IndexSpec


def test_run_config_rows_record_served_by_as_text(tmp_path):
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((300, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[:12] + 0.01 * rng.standard_normal((12, 16)).astype(np.float32)
    truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]  # rows, as measure() compares them
    config = BenchConfig("exact", IndexSpec(backend="exact"), ({}, {"ef_search": 8}))
    rows = run_config(config, vectors, queries, truth, index_dir=tmp_path / "exact")
    data = json.loads(json.dumps([r.to_json() for r in rows]))
    assert [r["name"] for r in data] == ["exact", "exact-e8"]
    assert all(r["served_by"] == "exact[1 shard(s), d=16]" for r in data)
    assert all(r["recall_at_10"] == 1.0 for r in data)
    assert data[1]["params"]["ef_search"] == 8 and "build_s" not in data[1]  # a peer's key, not a config's
