"""A body the JSON guard parsed is not parsed again for the route (parsed_body.py), against a real uvicorn."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from fastapi.routing import APIRoute

from ragsvc.api.parsed_body import ParsedBodyRoute
from tests.api.conftest import LiveServer, free_port, make_settings


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[LiveServer]:
    from ragsvc.api.app import create_app

    live = LiveServer(create_app(make_settings(tmp_path_factory.mktemp("parsed") / "data")), free_port())
    live.start()
    yield live
    live.stop()


def _routes(routes: list) -> Iterator:
    """Every route, also inside included routers (FastAPI keeps an included router whole, as one route)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        yield from _routes(inner.routes) if inner is not None else [route]


def test_every_route_that_takes_a_body_takes_the_guards_parse(tmp_path) -> None:
    from ragsvc.api.app import create_app
    from ragsvc.api.model_app import create_model_app
    from ragsvc.serving.config import EngineConfig

    apps = {"api": create_app(make_settings(tmp_path / "data")),
            "model server": create_model_app(EngineConfig(), settings=make_settings(tmp_path / "model"))}
    for name, app in apps.items():
        with_body = [r for r in _routes(app.routes) if isinstance(r, APIRoute) and r.body_field is not None]
        assert with_body, name
        assert [r.path for r in with_body if not isinstance(r, ParsedBodyRoute)] == [], name


def test_a_body_the_guard_parsed_reaches_the_route_without_a_second_parse(server, monkeypatch) -> None:
    """300 documents with a list in their metadata: enough brackets that the guard parses the body (it might nest
    past Python's parser). The route takes that document; before, FastAPI parsed the bytes again."""
    wide = {"documents": [{"id": f"w{i}", "text": f"wide {i}", "metadata": {"n": [i]}} for i in range(300)]}
    body = json.dumps(wide).encode()
    parses = []
    real = json.loads

    def counting(s, *args, **kwargs):
        if s == body:
            parses.append(1)
        return real(s, *args, **kwargs)

    monkeypatch.setattr(json, "loads", counting)  # the server runs in this process, on a thread
    with httpx.Client(base_url=server.url, timeout=60) as client:
        assert client.post("/v1/collections", json={"name": "wide"}).status_code == 201
        r = client.post("/v1/collections/wide/documents", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 201, r.text
        assert len(r.json()["ids"]) == 300
        assert client.get("/v1/collections/wide/documents/w299").json()["metadata"] == {"n": [299]}
    assert len(parses) == 1
