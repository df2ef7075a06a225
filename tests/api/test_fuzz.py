"""schemathesis against both apps' OpenAPI documents, over real uvicorn servers on 127.0.0.1.

Every operation gets generated requests, valid and invalid; each answer must be no 5xx, a status the operation
documents, and a body that matches the documented schema (errors included: every operation lists them). CI
runs a bounded number of examples per operation; `RAGSVC_FUZZ_EXAMPLES=N` runs N per operation (the README's
testing section has the long run).

Rate limiting is off on these servers: the fuzzer is one client sending as fast as it can, and a 429 would
hide the answer the route itself gives.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from ragsvc.retrieval.vector_store import CATALOG_FILE
from ragsvc.store.catalog import Catalog
from ragsvc.store.keys import mint_key
from tests.api.conftest import LiveServer, free_port, make_settings

EXAMPLES = int(os.environ.get("RAGSVC_FUZZ_EXAMPLES", "10"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
FUZZ_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=not os.environ.get("RAGSVC_FUZZ_EXAMPLES"),
                         suppress_health_check=list(HealthCheck), database=None)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "data"


@pytest.fixture(scope="module")
def admin(data_dir: Path) -> dict[str, str]:
    """An admin key for the fuzzer: without one, the first key it creates through POST /v1/keys turns
    authentication on and every later request would stop at 401."""
    catalog = Catalog(data_dir / CATALOG_FILE)
    try:
        new = mint_key("fuzzer", ["admin"])
        catalog.api_keys().add(new.record)
    finally:
        catalog.close()
    return {"Authorization": f"Bearer {new.token}"}


@pytest.fixture(scope="module")
def api_server(tmp_path_factory, data_dir: Path, admin: dict[str, str]) -> Iterator[LiveServer]:
    from ragsvc.api.app import create_app

    app = create_app(make_settings(data_dir, rate_limit_per_s=0))
    app.state.repo_roots = (tmp_path_factory.mktemp("fuzz-roots"),)
    server = LiveServer(app, free_port())
    server.start()
    with httpx.Client(base_url=server.url, timeout=60, headers=admin) as c:  # something for reads to find
        assert c.post("/v1/collections", json={"name": "fuzz"}).status_code == 201
        docs = [{"id": f"d{i}", "text": f"document {i} about paged attention", "metadata": {"i": i}} for i in range(5)]
        assert c.post("/v1/collections/fuzz/documents", json={"documents": docs}).status_code == 201
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api_schema(api_server: LiveServer):
    return schemathesis.openapi.from_url(f"{api_server.url}/openapi.json")


@pytest.fixture(scope="module")
def model_server(data_dir: Path, admin: dict[str, str]) -> Iterator[str]:
    from ragsvc.api.model_app import create_model_app, serve_in_thread
    from ragsvc.serving.config import EngineConfig
    from tests.llm.conftest import MODEL_CACHE

    # a short context bounds what one generated request can cost (n <= 16 sequences of <= 64 tokens)
    config = EngineConfig(model="smollm2", dtype="float32", cache_dir=str(MODEL_CACHE), num_kv_blocks=80,
                          max_model_len=64, num_threads=1)
    # the same data folder: the model server reads the keys file the catalog writes beside itself
    with serve_in_thread(create_model_app(config, settings=make_settings(data_dir, rate_limit_per_s=0))) as url:
        yield url


@pytest.fixture(scope="module")
def model_schema(model_server: str):
    return schemathesis.openapi.from_url(f"{model_server}/openapi.json")


api = schemathesis.pytest.from_fixture("api_schema")
model = schemathesis.pytest.from_fixture("model_schema")


@api.parametrize()
@FUZZ_SETTINGS
def test_api_fuzz(case, admin) -> None:
    case.call_and_validate(checks=CHECKS, headers=admin, timeout=120)


@pytest.mark.slow
@model.parametrize()
@FUZZ_SETTINGS
def test_model_server_fuzz(case, admin) -> None:
    if isinstance(case.body, dict) and isinstance(case.body.get("model"), str):
        case.body["model"] = "smollm2"  # a random name is a 404 before anything else runs: reach the engine
    case.call_and_validate(checks=CHECKS, headers=admin, timeout=300)


def test_streamed_answers_are_documented(tmp_path) -> None:
    """A conforming client (and the fuzzer) must expect server-sent events where `stream: true` sends them."""
    from ragsvc.api.app import create_app
    from ragsvc.api.model_app import create_model_app
    from ragsvc.serving.config import EngineConfig

    model_spec = create_model_app(EngineConfig(model="smollm2"), settings=make_settings(tmp_path)).openapi()
    api_spec = create_app(make_settings(tmp_path)).openapi()
    for spec, path in ((model_spec, "/v1/completions"), (model_spec, "/v1/chat/completions"), (api_spec, "/v1/answer")):
        assert "text/event-stream" in spec["paths"][path]["post"]["responses"]["200"]["content"], path
