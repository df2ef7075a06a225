"""Collections placed on Ray through the real API and VectorStore: same hits as in process, placement stored.

One real uvicorn app joined to the package's local Ray (RAGSVC_CLUSTER__ADDRESS=local reuses the Ray this
process already runs), real MiniLM, real duckdb. The restart and no-cluster cases use VectorStore directly:
the API only maps its errors.
"""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from ragsvc.config import ClusterSettings
from ragsvc.errors import InvalidInput, NotReady
from ragsvc.index.spec import IndexSpec
from ragsvc.retrieval.vector_store import VectorStore
from ragsvc.types import DocumentInput
from tests.api.conftest import LiveServer, free_port, make_settings
from tests.cluster.ray_kills import kill_for_good

pytest.importorskip("ray")

TOPICS = ["paged attention keeps the KV cache in fixed-size blocks", "HNSW graphs answer nearest neighbour queries",
          "duckdb stores tables in one file with transactions", "Ray actors hold state between remote calls",
          "BM25 ranks documents by term frequency", "FLARE retrieves again when a sentence is unsure",
          "a Matryoshka embedding keeps meaning in its leading dimensions", "speculative decoding drafts tokens"]
DOCS = [{"id": f"d{i}", "text": f"{topic}. Note {i} about {topic.split()[0]}.", "metadata": {"i": i}}
        for i, topic in enumerate(TOPICS * 3)]
QUERIES = ["memory blocks for attention", "graph search for neighbours", "an embedded database", "remote actors",
           "term weighting", "retrieve when unsure"]
RAY_INDEX = {"backend": "hnsw", "num_shards": 2, "placement": {"mode": "ray", "replicas": 2, "spread": "soft"}}


@pytest.fixture(scope="module")
def api(cluster, tmp_path_factory):
    from ragsvc.api.app import create_app

    settings = make_settings(tmp_path_factory.mktemp("placed") / "data").model_copy(
        update={"cluster": ClusterSettings(address="local", deadline_ms=3000, hedge_ms=50)})
    app = create_app(settings)
    server = LiveServer(app, free_port())
    server.start()
    with httpx.Client(base_url=server.url, timeout=120) as client:
        client.app = app  # the test below reaches the shard actors through the app's store
        for name, index in (("on_ray", RAY_INDEX), ("local", {"backend": "hnsw", "num_shards": 2})):
            assert client.post("/v1/collections", json={"name": name, "index": index}).status_code == 201
            r = client.post(f"/v1/collections/{name}/documents", json={"documents": DOCS})
            assert r.status_code == 201, r.text
        yield client
    server.stop()


def _search(client: httpx.Client, name: str, query: str, **extra) -> dict:
    r = client.post(f"/v1/collections/{name}/search", json={"query": query, "k": 5, **extra})
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.slow
def test_a_ray_placed_collection_answers_like_in_process(api):
    got = api.get("/v1/collections/on_ray").json()
    assert got["index"]["placement"] == {"mode": "ray", "replicas": 2, "spread": "soft", "cpus_per_replica": 0.0}
    assert api.get("/v1/collections/local").json()["index"]["placement"]["mode"] == "in_process"
    for query in QUERIES:
        remote, local = _search(api, "on_ray", query), _search(api, "local", query)
        assert [h["document_id"] for h in remote["hits"]] == [h["document_id"] for h in local["hits"]]
        assert [round(h["score"], 5) for h in remote["hits"]] == [round(h["score"], 5) for h in local["hits"]]
        assert remote["served_by_detail"]["replicas"] == 2
        assert "x2 replica(s) on ray" in remote["served_by"]
        assert local["served_by_detail"]["replicas"] is None
    remote_index = api.app.state.vector_store._indexes["on_ray"].remote  # the settings reached the fan-out
    assert (remote_index.deadline_ms, remote_index.hedge_ms) == (3000.0, 50.0)
    filtered = _search(api, "on_ray", "graphs", filter={"i": {"$in": [1, 9]}})
    assert sorted(h["document_id"] for h in filtered["hits"]) == ["d1", "d9"]


@pytest.mark.slow
def test_writes_reach_the_ray_shards_after_the_catalog(api):
    assert _search(api, "on_ray", QUERIES[0])["hits"][0]["document_id"] in {"d0", "d8", "d16"}
    for name in ("on_ray", "local"):
        for doc in ("d0", "d8", "d16"):
            assert api.delete(f"/v1/collections/{name}/documents/{doc}").status_code == 204
    remote, local = _search(api, "on_ray", QUERIES[0]), _search(api, "local", QUERIES[0])
    assert not {"d0", "d8", "d16"} & {h["document_id"] for h in remote["hits"]}
    assert [h["document_id"] for h in remote["hits"]] == [h["document_id"] for h in local["hits"]]
    new = {"id": "fresh", "text": "paged attention blocks hold the KV cache of every sequence"}
    assert api.post("/v1/collections/on_ray/documents", json={"documents": [new]}).status_code == 201
    assert _search(api, "on_ray", QUERIES[0])["hits"][0]["document_id"] == "fresh"


@pytest.mark.slow
@pytest.mark.parametrize("index,says", [
    ({"num_shards": 2, "placement": {"mode": "ray", "replicas": 2}}, "2 replicas of each shard on distinct nodes"),
    ({"placement": {"mode": "ray", "replicas": 17}}, "between 1 and 16"),
    ({"placement": {"mode": "ray", "shards": 2}}, "shards"),
    ({"placement": {"mode": "cloud"}}, "placement"),
    ({"placement": {"replicas": 2}}, "replicas apply to placement mode ray"),
    ({"dims": 64, "placement": {"mode": "ray", "spread": "soft"}}, "need no training"),
])
def test_a_placement_that_cannot_be_hosted_is_a_400_and_writes_nothing(api, index, says):
    r = api.post("/v1/collections", json={"name": "refused", "index": index})
    assert r.status_code == 400, r.text
    assert says in r.text
    assert api.get("/v1/collections/refused").status_code == 404


@pytest.mark.slow
def test_a_shard_with_no_replica_left_is_a_503_or_a_flagged_partial_answer(api):
    from ragsvc.index.sharded_index import shard_of

    index = {"backend": "hnsw", "num_shards": 2, "placement": {"mode": "ray", "spread": "soft"}}
    assert api.post("/v1/collections", json={"name": "fragile", "index": index}).status_code == 201
    assert api.post("/v1/collections/fragile/documents", json={"documents": DOCS}).status_code == 201
    body = {"query": QUERIES[0], "k": 5}
    assert api.post("/v1/collections/fragile/search", json={**body, "deadline_ms": 0}).status_code == 400
    whole = _search(api, "fragile", QUERIES[0])
    kill_for_good(api.app.state.vector_store._indexes["fragile"].remote.hosts[0][0])
    failed = api.post("/v1/collections/fragile/search", json={**body, "deadline_ms": 1000})
    assert failed.status_code == 503 and "shard-0" in failed.text
    partial = _search(api, "fragile", QUERIES[0], allow_partial=True, deadline_ms=1000)
    assert partial["partial"] is True and partial["served_by_detail"]["missing_shards"] == ["shard-0"]
    assert "partial(missing shard-0)" in partial["served_by"]
    kept = [h for h in whole["hits"] if shard_of(np.array([h["chunk_id"]]), 2)[0] == 1]
    assert [h["chunk_id"] for h in partial["hits"]][: len(kept)] == [h["chunk_id"] for h in kept]
    assert all(shard_of(np.array([h["chunk_id"]]), 2)[0] == 1 for h in partial["hits"])
    assert whole["partial"] is False
    refused = api.post("/v1/collections/fragile/search", json={**body, "mode": "hybrid", "allow_partial": True})
    assert refused.status_code == 400 and "allow_partial" in refused.text
    assert api.delete("/v1/collections/fragile").status_code == 204


@pytest.mark.slow
def test_placement_survives_a_restart_and_never_falls_back_in_process(cluster, minilm, tmp_path):
    spec = IndexSpec(backend="hnsw", num_shards=2, placement={"mode": "ray", "spread": "soft"})
    store = VectorStore(tmp_path, embedder=minilm, cluster=cluster)
    store.create_collection("c", index=spec)
    store.create_collection("plain")
    store.add_documents("c", [DocumentInput(d["text"], id=d["id"]) for d in DOCS])
    before = [[h.chunk_id for h in store.search("c", query=q, k=5).hits] for q in QUERIES]
    store.close()
    again = VectorStore(tmp_path, embedder=minilm, cluster=cluster)
    try:
        assert again.get_collection("c").index.placement.mode == "ray"
        found = [again.search("c", query=q, k=5) for q in QUERIES]
        assert [[h.chunk_id for h in f.hits] for f in found] == before
        assert found[0].served_by.replicas == 1
    finally:
        again.close()
    alone = VectorStore(tmp_path, embedder=minilm)  # joined no cluster: refused, not searched in process
    try:
        alone.load_indexes()  # what `serve` runs at start: the other collections still load
        assert alone.search("plain", query=QUERIES[0], k=5).hits == []
        with pytest.raises(NotReady, match="RAGSVC_CLUSTER__ADDRESS"):
            alone.search("c", query=QUERIES[0], k=5)
        with pytest.raises(InvalidInput, match="RAGSVC_CLUSTER__ADDRESS"):
            alone.create_collection("d", index=spec)
        assert [c.name for c in alone.list_collections()] == ["c", "plain"]
    finally:
        alone.close()
