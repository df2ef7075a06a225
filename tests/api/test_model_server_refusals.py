"""The API in front of a real model server (`serve-model`'s app, real SmolLM2, keys required) that refuses
ragsvc's own settings: a missing or wrong key (401) or a model name it does not serve (404). The user's
request is fine, so they get a 502 in the API's error shape that says the model server refused and which
setting to fix, never the 400 / 404 that would tell them their own request was wrong."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import LiveServer, free_port, make_settings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(base URL with /v1, a key it accepts)."""
    from ragsvc.api.model_app import create_model_app, serve_in_thread
    from ragsvc.store.keys import KEYS_FILE, mint_key, write_keys_file
    from tests.llm.conftest import engine_config

    data = tmp_path_factory.mktemp("model-keys")
    key = mint_key("api-server", ["admin"])
    write_keys_file(data / KEYS_FILE, [key.record])
    with serve_in_thread(create_model_app(engine_config(), settings=make_settings(data))) as url:
        yield f"{url}/v1", key.token


def _api(tmp_path: Path, url: str, **generator: object) -> LiveServer:
    from ragsvc.api.app import create_app
    from ragsvc.config import GeneratorSettings

    settings = make_settings(tmp_path / "data").model_copy(
        update={"generator": GeneratorSettings(url=url, timeout_s=60, **generator)})
    return LiveServer(create_app(settings), free_port())


def _ask_all_ways(server: LiveServer) -> list[httpx.Response]:
    with httpx.Client(base_url=server.url, timeout=120) as client:
        assert client.post("/v1/collections", json={"name": "c"}).status_code == 201
        docs = {"documents": [{"text": "Paged attention keeps the KV cache in fixed-size blocks."}]}
        assert client.post("/v1/collections/c/documents", json=docs).status_code == 201
        short = {"question": "What are blocks?", "collection": "c", "max_tokens": 16}  # reaching the model is the point
        return [client.post("/v1/answer", json=short),
                client.post("/v1/answer", json={**short, "flare": True}),
                client.post("/v1/collections/c/search", json={"query": "blocks", "hyde": {"n": 2, "max_tokens": 16}})]


def _check_refused(responses: list[httpx.Response], *needles: str) -> None:
    for r in responses:
        assert r.status_code == 502, (r.request.url, r.text)
        body = r.json()
        assert body["error"] == "upstream_refused" and "the model server at" in body["detail"]
        assert all(needle in body["detail"] for needle in needles), body["detail"]


@pytest.mark.parametrize("key", [None, "rsk_wrong_secret"])
def test_a_key_the_model_server_refuses_is_a_502_naming_the_key_setting(model_server, tmp_path, key):
    url, _ = model_server
    server = _api(tmp_path, url, model="smollm2", api_key=key)
    server.start()
    try:
        _check_refused(_ask_all_ways(server), "RAGSVC_GENERATOR__API_KEY", "401")
    finally:
        server.stop()


def test_a_model_name_the_model_server_does_not_serve_is_a_502_naming_the_model_setting(model_server, tmp_path):
    url, token = model_server
    server = _api(tmp_path, url, model="no-such-model", api_key=token)
    server.start()
    try:
        _check_refused(_ask_all_ways(server), "RAGSVC_GENERATOR__MODEL", "'no-such-model'")
    finally:
        server.stop()


def test_the_right_key_and_model_answer(model_server, tmp_path):
    url, token = model_server
    server = _api(tmp_path, url, model="smollm2", api_key=token)
    server.start()
    try:
        responses = _ask_all_ways(server)
        assert [r.status_code for r in responses] == [200, 200, 200], [r.text for r in responses]
    finally:
        server.stop()
