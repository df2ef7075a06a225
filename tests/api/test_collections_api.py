"""The collections API against a real uvicorn on 127.0.0.1, through httpx."""

import json

import pytest

from ragsvc.api.schemas import ServedByPublic

DOCS = [
    {"id": "kv", "text": "Paged attention keeps the KV cache in fixed-size blocks with block tables.",
     "metadata": {"year": 2023, "kind": "paper"}},
    {"id": "hnsw", "text": "HNSW graphs give fast approximate nearest neighbour search.",
     "metadata": {"year": 2016, "kind": "paper"}},
    {"id": "duck", "text": "DuckDB keeps tables in one file and supports transactions.",
     "metadata": {"year": 2019, "kind": "docs"}},
]


@pytest.fixture(scope="module")
def papers(live_api):
    import httpx

    with httpx.Client(base_url=live_api.url, timeout=60) as c:
        r = c.post("/v1/collections", json={"name": "papers", "index": {"backend": "hnsw", "num_shards": 2}})
        assert r.status_code == 201, r.text
        r = c.post("/v1/collections/papers/documents", json={"documents": DOCS})
        assert r.status_code == 201, r.text
        assert r.json()["ids"] == ["kv", "hnsw", "duck"]
    return "papers"


def _count(client, name="papers"):
    return client.get(f"/v1/collections/{name}").json()["num_documents"]


def test_health_and_openapi(client):
    assert client.get("/health").json()["status"] == "ok"
    head = client.head("/health")  # what load balancers and uptime checks often send
    assert head.status_code == 200 and head.content == b""
    spec = client.get("/openapi.json").json()
    assert "/v1/collections/{name}/search" in spec["paths"]
    assert client.get("/docs").status_code == 200


def test_search_returns_hits_with_timings(client, papers):
    r = client.post(f"/v1/collections/{papers}/search", json={"query": "memory blocks for the KV cache", "k": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["hits"][0]["document_id"] == "kv"
    assert body["hits"][0]["metadata"]["year"] == 2023
    assert "total_ms" in body["timings_ms"]
    assert body["served_by"] == "hnsw[2 shard(s), d=384]"  # the one-line form, as before
    detail = body["served_by_detail"]
    assert detail["path"] == "ann" and detail["backend"] == "hnsw" and detail["num_shards"] == 2
    assert detail["dims"] == 384 and detail["stages"] == []
    assert set(detail) == set(ServedByPublic.model_fields)  # the wire model documents every field sent


def test_filter_and_vector_search(client, papers):
    r = client.post(f"/v1/collections/{papers}/search",
                    json={"query": "papers", "k": 10, "filter": {"year": {"$lt": 2020}, "kind": {"$in": ["paper"]}}})
    assert [h["document_id"] for h in r.json()["hits"]] == ["hnsw"]
    dim = client.get(f"/v1/collections/{papers}").json()["dim"]
    r = client.post(f"/v1/collections/{papers}/search", json={"vector": [0.1] * dim, "k": 50})
    assert r.status_code == 200 and len(r.json()["hits"]) == 3


def test_reingest_is_noop_and_delete_document(client, live_api):
    assert client.post("/v1/collections", json={"name": "scratch"}).status_code == 201
    for _ in range(2):
        r = client.post("/v1/collections/scratch/documents", json={"documents": DOCS[:2]})
        assert r.status_code == 201
    assert client.get("/v1/collections/scratch").json()["num_chunks"] == 2
    assert client.delete("/v1/collections/scratch/documents/kv").status_code == 204
    assert client.get("/v1/collections/scratch/documents/kv").status_code == 404
    assert [d["id"] for d in client.get("/v1/collections/scratch/documents").json()] == ["hnsw"]
    assert client.delete("/v1/collections/scratch").status_code == 204
    assert client.get("/v1/collections/scratch").status_code == 404


@pytest.mark.parametrize(
    ("path", "payload", "status", "needle"),
    [
        ("/v1/collections/papers/search", b'{"query": "x", "k": ', 400, "not valid JSON"),
        ("/v1/collections/papers/search", {"query": "x", "k": 0}, 400, "k must be between"),
        ("/v1/collections/papers/search", {"query": "x", "k": 1_000_000}, 400, "k must be between"),
        ("/v1/collections/papers/search", b'{"vector": [NaN, 1.0], "k": 3}', 400, "finite"),
        ("/v1/collections/papers/search", {"vector": [1.0, 2.0], "k": 3}, 400, "dimensions"),
        ("/v1/collections/papers/search", {"query": "x", "filter": {"year": {"$near": 1}}}, 400,
         "unknown filter operator"),
        ("/v1/collections/papers/search", {"query": "x", "vector": [1.0]}, 400, "exactly one"),
        ("/v1/collections/papers/search", {"query": "x", "colour": "red"}, 400, "colour"),
        ("/v1/collections/nope/search", {"query": "x"}, 404, "does not exist; create it with POST /v1/collections"),
        ("/v1/collections/papers/documents", {"documents": [{"text": "ok"}, {"text": ""}]}, 400,
         "body.documents.1.text: empty"),
        ("/v1/collections/papers/documents", {"documents": []}, 400, "empty"),
        ("/v1/collections", {"name": "bad name!"}, 400, "invalid"),
        ("/v1/collections", {"name": "x", "index": {"backend": "annoy"}}, 400, "annoy"),
        ("/v1/collections", {"name": "papers"}, 409, "already exists"),
    ],
)
def test_bad_input_gets_clear_4xx_and_writes_nothing(client, papers, path, payload, status, needle):
    before = _count(client)
    if isinstance(payload, bytes):
        r = client.post(path, content=payload, headers={"content-type": "application/json"})
    else:
        r = client.post(path, json=payload)
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "detail"}
    assert needle.lower() in json.dumps(body).lower()
    assert _count(client) == before


def test_nan_in_a_full_width_vector_is_refused(client, papers):
    dim = client.get(f"/v1/collections/{papers}").json()["dim"]
    raw = '{"vector": [NaN' + ", 0.5" * (dim - 1) + '], "k": 3}'
    r = client.post(f"/v1/collections/{papers}/search", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 400 and "NaN" in r.json()["detail"]


def test_ten_megabyte_document_gets_413_and_nothing_written(client, papers):
    before = _count(client)
    big = {"documents": [{"text": "word " * (2 * 1024 * 1024)}]}  # 10 MiB of text
    r = client.post(f"/v1/collections/{papers}/documents", json=big)
    assert r.status_code == 413
    assert "exceeds" in r.json()["detail"]
    assert _count(client) == before
