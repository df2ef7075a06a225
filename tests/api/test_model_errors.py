"""Model routes keep OpenAI's error shape, and a 5xx carries the request id the server log has it under: on the
standalone model server (real SmolLM2, a real chat completion whose tokenizer fails) and on the API, which
serves the same routes with `serve --with-model`.

The failures are made by swapping in a tokenizer or served model that raises: an unexpected bug cannot be
caused from outside, which is the point of the 500."""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import LiveServer, free_port, make_settings

MODEL = "smollm2"
SMOLLM2_CACHE = Path(tempfile.gettempdir()) / "ragsvc-test-models"


class _Raising:
    """Any attribute access fails, as a bug deep in a dependency would."""

    def __getattr__(self, name: str) -> object:
        raise RuntimeError(f"a bug in {name}, not a user error")


def _check_500(r: httpx.Response, caplog: pytest.LogCaptureFixture) -> None:
    assert r.status_code == 500, r.text
    body = r.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}  # OpenAI's shape, as clients parse it
    assert body["error"]["type"] == "server_error" and body["error"]["code"] == "internal_error"
    assert body["request_id"] == r.headers["x-request-id"]
    assert body["request_id"] in body["error"]["message"] and "a bug" not in body["error"]["message"]
    assert any(body["request_id"] in rec.getMessage() for rec in caplog.records)


def test_api_model_route_500_has_openai_shape_and_request_id(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    from ragsvc.api.app import create_app
    from ragsvc.api.routes.openai_compat import router

    app = create_app(make_settings(tmp_path / "data"), extra_routers=[router])
    server = LiveServer(app, free_port())
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            r = client.get("/v1/models")
            assert r.status_code == 503 and r.json()["request_id"] == r.headers["x-request-id"]  # no model yet
            app.state.served_model = _Raising()
            _check_500(client.get("/v1/models", headers={"X-Request-ID": "trace-500"}), caplog)
            bad = client.post("/v1/chat/completions", json={"model": MODEL, "messages": "not a list"})
            assert bad.status_code == 400 and "request_id" not in bad.json()  # a 4xx needs no log lookup
    finally:
        server.stop()


@pytest.fixture()
def model_server() -> Iterator[tuple[str, object]]:
    from ragsvc.api.model_app import create_model_app, serve_in_thread
    from ragsvc.serving.config import EngineConfig
    from ragsvc.serving.loader import resolve_model_dir

    model_dir = resolve_model_dir(MODEL, cache_dir=str(SMOLLM2_CACHE))
    config = EngineConfig(model=MODEL, cache_dir=str(model_dir.parent), num_kv_blocks=32, block_size=16,
                          max_num_seqs=2, num_threads=1)
    app = create_model_app(config)
    with serve_in_thread(app) as url:
        yield url, app


@pytest.mark.slow
def test_model_server_500_has_openai_shape_and_request_id(model_server, caplog: pytest.LogCaptureFixture) -> None:
    url, app = model_server
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    with httpx.Client(base_url=url, timeout=120) as client:
        assert client.post("/v1/chat/completions", json=chat).status_code == 200
        served = app.state.served_model
        app.state.served_model = dataclasses.replace(served, tokenizer=_Raising())
        try:
            _check_500(client.post("/v1/chat/completions", json=chat), caplog)
        finally:
            app.state.served_model = served
        assert client.post("/v1/chat/completions", json=chat).status_code == 200  # one failure, not a broken server


@pytest.mark.slow
def test_a_stream_that_fails_after_its_200_ends_with_an_error_event_with_the_request_id(
        model_server, caplog: pytest.LogCaptureFixture) -> None:
    url, app = model_server
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "stream": True}
    served = app.state.served_model
    app.state.served_model = dataclasses.replace(served, async_engine=_Raising())
    try:
        with httpx.Client(base_url=url, timeout=120) as client, client.stream(
                "POST", "/v1/chat/completions", json=chat, headers={"X-Request-ID": "trace-sse"}) as r:
            assert r.status_code == 200
            data = [line[len("data: "):] for line in r.iter_lines() if line.startswith("data: ")]
    finally:
        app.state.served_model = served
    error = json.loads(data[-1])
    assert error["request_id"] == "trace-sse" and error["error"]["type"] == "server_error", data
    assert "trace-sse" in error["error"]["message"] and "a bug" not in error["error"]["message"]
    assert any("trace-sse" in rec.getMessage() for rec in caplog.records)


def test_unknown_paths_and_methods_answer_in_openai_shape_on_the_model_server(tmp_path: Path) -> None:
    """An OpenAI client asking the model server for a route it lacks (embeddings) or with the wrong method gets
    an error it can parse; paths outside /v1/ keep ragsvc's shape there, and the API keeps its own shape for its
    own paths, OpenAI's for the OpenAI routes."""
    from fastapi.testclient import TestClient

    from ragsvc.api.app import create_app
    from ragsvc.api.model_app import create_model_app
    from tests.llm.conftest import engine_config

    model_app = TestClient(create_model_app(engine_config(), settings=make_settings(tmp_path / "m")),
                           base_url="http://127.0.0.1")  # not entered: the model is never loaded
    for method, path, status in (("POST", "/v1/embeddings", 404), ("GET", "/v1/chat/completions", 405),
                                 ("POST", "/v1/audio/speech", 404)):
        r = model_app.request(method, path)
        assert r.status_code == status, r.text
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert model_app.get("/v1/embeddings").json()["error"]["type"] == "not_found_error"
    assert model_app.get("/nothing").json()["error"] == "not_found"  # outside /v1/, as its /health: ragsvc's
    api = TestClient(create_app(make_settings(tmp_path / "a")), base_url="http://127.0.0.1")
    assert api.get("/v1/nothing").json()["error"] == "not_found"  # the API's own shape
    assert set(api.get("/v1/chat/completions").json()["error"]) == {"message", "type", "param", "code"}
