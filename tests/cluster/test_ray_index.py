"""RayShardedIndex on a real local Ray (2 CPUs, started once for the package) against in-process sharding.

Each test builds its own small index (2 shards x 2 replicas: four actors, sharing the module's Ray) and
compares with a `ShardedIndex` holding the same rows, so "identical" means the same ids and scores.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from ragsvc.cluster.placement import Placement
from ragsvc.cluster.ray_index import RayShardedIndex
from ragsvc.cluster.shard_host import write_replica_files
from ragsvc.errors import InvalidInput, NotReady
from ragsvc.index.factory import make_shard
from ragsvc.index.memory_source import InMemoryVectorSource
from ragsvc.index.sharded_index import ShardedIndex
from ragsvc.index.spec import IndexSpec
from tests.cluster.ray_kills import kill_for_good

ray = pytest.importorskip("ray")

DIM = 16
SOFT = Placement(mode="ray", replicas=2, spread="soft")


def _data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    vectors = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.arange(1, n + 1, dtype=np.int64), vectors


def _local(spec: IndexSpec, ids: np.ndarray, vectors: np.ndarray) -> ShardedIndex:
    index = ShardedIndex([make_shard(spec, DIM) for _ in range(spec.num_shards)])
    index.add(ids, vectors)
    return index


@pytest.fixture
def pair(cluster, tmp_path):
    """(ray index, in-process index, source, queries) over the same 600 rows, exact shards."""
    spec = IndexSpec(backend="exact", num_shards=2)
    ids, vectors = _data(600)
    source = InMemoryVectorSource(vectors, ids=ids)
    remote = RayShardedIndex.create(spec, DIM, SOFT, cluster, source=source, directory=tmp_path,
                                    repair_interval_s=0)
    yield remote, _local(spec, ids, vectors), source, _data(20, seed=7)[1]
    remote.close()


def _pid(handle) -> int:
    return ray.get(handle.__ray_call__.remote(lambda host: os.getpid()), timeout=120)


def _kill_and_restart(handle) -> int:
    """Kill an actor with restart allowed and return its watermark once a new process answers.

    `ray.kill` is asynchronous, so a call right after it may still reach the old process: wait for a new pid
    (calls sent mid-restart fail with ActorUnavailableError; later ones queue until the actor is back).
    """
    old = _pid(handle)
    ray.kill(handle, no_restart=False)
    for _ in range(200):
        try:
            if _pid(handle) != old:
                return ray.get(handle.ping.remote(), timeout=120)
        except ray.exceptions.ActorUnavailableError:
            continue
    raise AssertionError("the actor did not come back in a new process after 200 calls")


def _same(a, b) -> None:
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_allclose(a.scores, b.scores, rtol=0, atol=1e-6)


def test_results_identical_to_in_process_sharding(pair):
    remote, local, _, queries = pair
    assert len(remote) == len(local) == 600
    for k in (1, 10, 700):  # k above the collection size: both pad with -1
        hits = remote.search(queries, k)
        _same(hits, local.search(queries, k))
        assert not hits.partial and hits.missing_shards == ()
    allowed = np.arange(1, 600, 3)
    _same(remote.search(queries, 10, allowed_ids=allowed), local.search(queries, 10, allowed_ids=allowed))


def test_hnsw_replicas_loading_saved_shard_files_answer_identically(cluster, tmp_path):
    spec = IndexSpec(backend="hnsw", num_shards=2, ef_search=32)
    ids, vectors = _data(800, seed=3)
    local = _local(spec, ids, vectors)
    for s, shard in enumerate(local.shards):  # the in-process build's files, written once per replica
        for r in range(2):
            write_replica_files(shard, tmp_path / f"shard-{s}-r{r}.hnsw", watermark=int(ids.max()))
    remote = RayShardedIndex.create(spec, DIM, SOFT, cluster, directory=tmp_path,
                                    source=InMemoryVectorSource(vectors, ids=ids), repair_interval_s=0)
    try:
        assert remote.stale == set()  # every replica loaded its files at the catalog's watermark: no replay
        queries = _data(30, seed=4)[1]
        _same(remote.search(queries, 10), local.search(queries, 10))
    finally:
        remote.close()


@pytest.mark.slow
def test_a_replica_killed_mid_search_is_replaced_and_nothing_is_lost(pair):
    remote, local, _, queries = pair
    want = local.search(queries, 10)
    errors: list[BaseException] = []
    answers = []
    started = threading.Event()

    def client() -> None:
        for i in range(40):
            if i == 2:
                started.set()
            try:
                answers.append(remote.search(queries, 10, deadline_ms=5000))
            except BaseException as exc:  # noqa: BLE001 - recorded and asserted below
                errors.append(exc)

    thread = threading.Thread(target=client)
    thread.start()
    started.wait(timeout=60)
    ray.kill(remote.hosts[0][0], no_restart=True)
    ray.kill(remote.hosts[1][1], no_restart=True)
    thread.join(timeout=300)
    assert errors == []
    assert len(answers) == 40
    for hits in answers:
        _same(hits, want)
        assert not hits.partial
    assert remote.search(queries, 10).replicas == (1, 0)  # only the survivors are asked now


def test_no_replica_left_is_flagged_partial_or_refused(pair):
    remote, local, _, queries = pair
    for handle in remote.hosts[1]:
        kill_for_good(handle)
    with pytest.raises(NotReady, match="shard-1") as err:
        remote.search(queries, 10)
    assert err.value.status_code == 503
    assert err.value.detail == {"missing_shards": ["shard-1"]}
    hits = remote.search(queries, 10, allow_partial=True)
    assert hits.partial and hits.missing_shards == ("shard-1",)
    assert hits.replicas[1] == -1
    only_shard_0 = local.shards[0].search(queries, 10)
    np.testing.assert_array_equal(hits.ids, only_shard_0.ids)  # the other shard's hits, none invented


def test_deadline_zero_is_refused_before_any_fan_out(pair):
    remote, _, _, queries = pair
    with pytest.raises(InvalidInput, match="deadline_ms"):
        remote.search(queries, 10, deadline_ms=0)


@pytest.mark.slow
def test_writes_missed_while_restarting_are_replayed(pair):
    remote, local, source, queries = pair
    remote.save()  # files at watermark 600: a restart reloads them, then replays only what followed
    old_pid = _pid(remote.hosts[0][0])
    ray.kill(remote.hosts[0][0], no_restart=False)  # Ray restarts it from its constructor
    new_ids, new_vectors = np.arange(601, 801, dtype=np.int64), _data(200, seed=11)[1]
    source.append(new_ids, new_vectors)  # the catalog commits first ...
    remote.add(new_ids, new_vectors)  # ... then the write fans out; the restarting replica misses it
    gone = np.arange(1, 600, 7)
    source.remove(gone)
    remote.delete(gone)
    local.add(new_ids, new_vectors)
    local.delete(gone)
    for _ in range(200):  # wait for the new process (see _kill_and_restart)
        try:
            if _pid(remote.hosts[0][0]) != old_pid:
                break
        except ray.exceptions.ActorUnavailableError:
            continue
    assert remote.refresh() == set()  # finds the restarted replica behind (whenever it restarted), replays
    kill_for_good(remote.hosts[0][1])  # shard 0 now rests on the restarted replica alone
    hits = remote.search(queries, 10)
    assert hits.replicas[0] == 0
    _same(hits, local.search(queries, 10))
    _same(remote.search(queries, 900), local.search(queries, 900))


@pytest.mark.slow
def test_a_restarted_replica_that_is_behind_is_never_merged(pair):
    remote, local, source, queries = pair
    assert _kill_and_restart(remote.hosts[0][0]) == 0  # restarts empty (no files saved): watermark 0
    want = local.search(queries, 10)
    for _ in range(4):  # rotation reaches the restarted replica; its answer is refused and the sibling answers
        _same(remote.search(queries, 10), want)
    assert (0, 0) in remote.stale
    assert remote.repair() == set()
    kill_for_good(remote.hosts[0][1])
    _same(remote.search(queries, 10), want)


def test_strict_spread_with_more_replicas_than_nodes_starts_nothing(cluster):
    placement = Placement(mode="ray", replicas=cluster.num_nodes + 1)
    with pytest.raises(InvalidInput, match="alive node"):
        RayShardedIndex.create(IndexSpec(backend="exact"), DIM, placement, cluster)


def test_a_missed_deadline_is_an_error_or_a_flagged_partial_never_fewer_hits(pair):
    remote, local, _, queries = pair
    with pytest.raises(NotReady, match="shard-0, shard-1"):
        remote.search(queries, 10, deadline_ms=0.001)  # no actor answers within a microsecond
    hits = remote.search(queries, 10, deadline_ms=0.001, allow_partial=True)
    assert hits.partial and hits.missing_shards == ("shard-0", "shard-1")
    assert (hits.ids == -1).all()
    assert remote.suspect  # the replicas still working then are asked last until a ping clears them
    assert remote.refresh() == set() and not remote.suspect
    _same(remote.search(queries, 10), local.search(queries, 10))
