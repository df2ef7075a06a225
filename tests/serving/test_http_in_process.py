"""`ragsvc serve --with-model`: the OpenAI routes hosted inside another app through `model_extension`, whose
lifespan must still run (the engine starts before requests and stops after)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import torch
from fastapi import FastAPI

pytestmark = pytest.mark.slow


def test_model_extension_hosts_the_routes_and_keeps_the_host_lifespan(smollm2_dir):
    from ragsvc.api.model_app import model_extension, serve_in_thread
    from ragsvc.serving.config import EngineConfig

    events: list[str] = []

    @asynccontextmanager
    async def host_lifespan(app: FastAPI) -> AsyncIterator[None]:
        events.append("host up")
        yield
        events.append("host down")

    app = FastAPI(lifespan=host_lifespan)

    @app.get("/own")
    def own() -> dict:
        return {"ok": True}

    model_extension(EngineConfig(model="smollm2", cache_dir=str(smollm2_dir.parent), num_kv_blocks=32,
                                 num_threads=1))(app)
    threads = torch.get_num_threads()
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        assert events == ["host up"]
        assert client.get("/own").json() == {"ok": True}
        assert client.get("/v1/models").json()["data"][0]["id"] == "smollm2"
        r = client.post("/v1/chat/completions", json={"model": "smollm2", "max_tokens": 3,
                                                      "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] >= 1
        served = app.state.served_model
    torch.set_num_threads(threads)
    assert events == ["host up", "host down"]
    assert app.state.served_model is None  # engine stopped with the app
    assert served.engine.kv_stats()["num_free_blocks"] == 32
