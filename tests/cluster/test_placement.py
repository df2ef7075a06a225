"""Placement, cluster address and deadline checks, and the shard host on its own: no Ray started here."""

from __future__ import annotations

import socket
import time

import numpy as np
import pytest

from ragsvc.cluster.placement import ClusterAddress, Placement, check_deadline_ms
from ragsvc.cluster.runtime import connect
from ragsvc.cluster.shard_host import ShardHost, sidecar_path
from ragsvc.errors import InvalidInput, NotReady
from ragsvc.index.spec import IndexSpec


@pytest.mark.parametrize("kwargs", [
    {"mode": "cluster"}, {"mode": "ray", "replicas": 0}, {"mode": "ray", "replicas": 17}, {"replicas": 2},
    {"mode": "ray", "spread": "everywhere"}, {"mode": "ray", "cpus_per_replica": -1.0},
    {"mode": "ray", "replicas": True}, {"mode": "ray", "replicas": 1.5},
])
def test_bad_placement_is_refused_naming_the_field(kwargs):
    with pytest.raises(InvalidInput) as err:
        Placement(**kwargs)
    assert err.value.status_code == 400
    assert err.value.detail["param"].startswith("placement.")


def test_more_replicas_than_nodes_is_refused_under_strict_spread():
    placement = Placement(mode="ray", replicas=3)
    with pytest.raises(InvalidInput, match="3 replicas .* 2 alive node"):
        placement.check_nodes(2)
    placement.check_nodes(3)
    Placement(mode="ray", replicas=3, spread="soft").check_nodes(1)  # co-location allowed


@pytest.mark.parametrize("text", ["", "locale", "ray://", "ray://host", "http://host:10001", "ray://h:1 x"])
def test_bad_cluster_address_says_which_forms_exist(text):
    with pytest.raises(InvalidInput, match="RAGSVC_CLUSTER__ADDRESS"):
        ClusterAddress.parse(text)


def test_cluster_address_forms():
    assert ClusterAddress.parse("local") == ClusterAddress("local", None)
    assert ClusterAddress.parse(" auto ") == ClusterAddress("auto", "auto")
    assert ClusterAddress.parse("ray://head.example:10001").value == "ray://head.example:10001"


@pytest.mark.parametrize("deadline", [0, -5, 600_001])
def test_deadline_outside_bounds_is_a_400(deadline):
    with pytest.raises(InvalidInput, match="deadline_ms") as err:
        check_deadline_ms(deadline)
    assert err.value.status_code == 400


def test_unreachable_cluster_fails_fast_with_the_address():
    with socket.socket() as sock:  # a port nothing listens on: bound, then closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(NotReady, match=f"ray://127.0.0.1:{port} is unreachable") as err:
        connect(ClusterAddress.parse(f"ray://127.0.0.1:{port}"), timeout_s=3.0)
    assert err.value.status_code == 503
    assert time.monotonic() - started < 10.0  # bounded by the probe's timeout, not Ray Client's retries


def _vectors(n: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def test_host_behind_the_writer_applies_nothing_and_reports_its_watermark():
    host = ShardHost(IndexSpec(backend="exact"), 8)
    assert host.apply(np.arange(1, 11), _vectors(10), base=0, new=10) == 10
    assert host.apply(np.arange(21, 31), _vectors(10, seed=1), base=20, new=30) == 10  # missed 11..20
    assert len(host.shard) == 10
    assert host.replay(np.arange(11, 31), _vectors(20, seed=2), new=30) == 30
    assert len(host.shard) == 30


@pytest.mark.parametrize("backend,ext", [("exact", "npz"), ("hnsw", "hnsw")])
def test_host_reloads_its_saved_files_with_their_watermark(tmp_path, backend, ext):
    path = tmp_path / f"shard-0-r0.{ext}"
    spec = IndexSpec(backend=backend)
    host = ShardHost(spec, 8, path=str(path))
    host.apply(np.arange(1, 101), _vectors(100), base=0, new=150)
    host.delete(np.array([5, 6]), base=150)
    assert host.save() == 150
    again = ShardHost(spec, 8, path=str(path))
    assert again.watermark == 150
    assert len(again.shard) == 98
    queries = _vectors(3, seed=9)
    ids, scores, mark = again.search(queries, 5, None, None)
    want = host.search(queries, 5, None, None)
    np.testing.assert_array_equal(ids, want[0])
    assert mark == 150


def test_host_with_damaged_files_starts_empty_for_a_full_replay(tmp_path):
    path = tmp_path / "shard-0-r0.hnsw"
    host = ShardHost(IndexSpec(backend="hnsw"), 8, path=str(path))
    host.apply(np.arange(1, 51), _vectors(50), base=0, new=50)
    host.save()
    sidecar_path(path).write_text("{not json")
    again = ShardHost(IndexSpec(backend="hnsw"), 8, path=str(path))
    assert again.watermark == 0
    assert len(again.shard) == 0


def test_the_embedded_default_never_imports_ray():
    """The store and the API import the cluster code (placement is wired through them) but not Ray itself."""
    import subprocess
    import sys

    code = ("import sys\nimport ragsvc.api.app, ragsvc.retrieval.vector_store, ragsvc.cluster.collection\n"
            "sys.exit(1 if 'ray' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


def test_stored_specs_without_placement_read_as_in_process_and_keep_their_index_files():
    from ragsvc.index.collection_files import _file_settings

    old = IndexSpec(backend="hnsw", num_shards=2).to_dict()
    del old["placement"]  # what catalogs and manifests written before placement existed hold
    spec = IndexSpec.from_dict(old)
    assert spec.placement == Placement()
    assert _file_settings(old) == _file_settings(spec.to_dict())
    with pytest.raises(InvalidInput, match="the shard count is the index's num_shards"):
        IndexSpec.from_dict({**old, "placement": {"mode": "ray", "shards": 2}})
