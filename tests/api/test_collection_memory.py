"""Each collection's `index_bytes` in the collections API over a real uvicorn: the index's own measure of the
memory it holds (the same figure the store reports), growing as documents are added, for a flat and an HNSW
index."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.api.conftest import LiveServer, free_port, make_settings

pytestmark = pytest.mark.slow  # a real server (and MiniLM) per module

TEXTS = ["Paged attention keeps the KV cache in fixed-size blocks.", "HNSW graphs link each vector to neighbours.",
         "DuckDB keeps its tables in one file.", "BM25 scores terms by frequency and rarity."]


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[httpx.Client, object]]:
    from ragsvc.api.app import create_app

    app = create_app(make_settings(tmp_path_factory.mktemp("memory") / "data"))
    server = LiveServer(app, free_port())
    server.start()
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client, app
    server.stop()


@pytest.mark.parametrize("backend", ["exact", "hnsw"])
def test_index_bytes_is_the_index_measure_and_grows_with_the_documents(served, backend):
    client, app = served
    name = f"mem-{backend}"
    created = client.post("/v1/collections", json={"name": name, "index": {"backend": backend}})
    assert created.status_code == 201, created.text
    sizes = [created.json()["index_bytes"]]
    for i, text in enumerate(TEXTS):
        client.post(f"/v1/collections/{name}/documents",
                    json={"documents": [{"id": f"d{i}", "text": text}]}).raise_for_status()
        sizes.append(client.get(f"/v1/collections/{name}").json()["index_bytes"])
    assert sizes == sorted(sizes) and sizes[-1] > sizes[0]
    assert sizes[-1] >= len(TEXTS) * 384 * 4  # at least the float32 vectors of the four chunks
    assert sizes[-1] == app.state.vector_store.index_bytes(name)  # type: ignore[attr-defined]
    listed = {c["name"]: c["index_bytes"] for c in client.get("/v1/collections").json()}
    assert listed[name] == sizes[-1]
