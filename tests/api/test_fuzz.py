"""schemathesis against both apps' OpenAPI documents, over real uvicorn servers on 127.0.0.1.

Every operation gets generated requests, valid and invalid; each answer must be no 5xx, a status the operation
documents, and a body that matches the documented schema (errors included: every operation lists them). CI
runs a bounded number of examples per operation; `RAGSVC_FUZZ_EXAMPLES=N` runs N per operation (the README's
testing section has the long run). The servers are built as `tests/api/fuzz_servers.py` builds them; the
model server here serves a random-weight Llama with SmolLM2's tokenizer (`tiny_chat_model`), the long run
SmolLM2 itself.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api.conftest import LiveServer, make_settings
from tests.api.fuzz_hooks import name_served_model
from tests.api.fuzz_servers import add_admin_key, fuzz_settings, model_config, start_api, tiny_chat_model

EXAMPLES = int(os.environ.get("RAGSVC_FUZZ_EXAMPLES", "10"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
FUZZ_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=not os.environ.get("RAGSVC_FUZZ_EXAMPLES"),
                         suppress_health_check=list(HealthCheck), database=None)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "data"


@pytest.fixture(scope="module")
def admin(data_dir: Path) -> dict[str, str]:
    return {"Authorization": f"Bearer {add_admin_key(data_dir)}"}


@pytest.fixture(scope="module")
def api_server(tmp_path_factory, data_dir: Path, admin: dict[str, str]) -> Iterator[LiveServer]:
    server = start_api(data_dir, tmp_path_factory.mktemp("fuzz-roots"), admin["Authorization"].removeprefix("Bearer "))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api_schema(api_server: LiveServer):
    return schemathesis.openapi.from_url(f"{api_server.url}/openapi.json")


@pytest.fixture(scope="module")
def model_server(tmp_path_factory, data_dir: Path, admin: dict[str, str]) -> Iterator[str]:
    from ragsvc.api.model_app import create_model_app, serve_in_thread

    model = tiny_chat_model(tmp_path_factory.mktemp("tiny-chat"))  # the engine and routes are real; see there
    # the same data folder: the model server reads the keys file the catalog writes beside itself
    with serve_in_thread(create_model_app(model_config(model=str(model)), settings=fuzz_settings(data_dir))) as url:
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
    name_served_model(case.body)
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
