"""The model server: a FastAPI app whose lifespan builds the engine, and the ways to host the OpenAI routes.

- `create_model_app(config)`: the standalone server (`ragsvc serve-model`): lifespan loads LLMEngine, starts
  AsyncLLMEngine, serves `/v1/*` and `/health`.
- `model_extension(config)`: an `Extension` for `ragsvc.api.app.create_app(extensions=[...])`, so `ragsvc serve`
  hosts the same routes in-process (the engine starts and stops with the app's lifespan).
- `include_model_api(app, engine=..., async_engine=...)`: the same routes over an engine someone else built.
- `serve_in_thread(app)`: a real uvicorn on 127.0.0.1 in a background thread (tests, the HTTP benchmark).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ragsvc import __version__, gc_freeze
from ragsvc.api.auth import PUBLIC, FileKeys, requires
from ragsvc.api.edge import install_edge
from ragsvc.api.errors import install_error_handlers
from ragsvc.api.http_protocol import protocol_for
from ragsvc.api.openai_limits import OpenAILimits
from ragsvc.api.routes.openai_compat import ServedModel, router
from ragsvc.api.tcp_socket import tcp_socket
from ragsvc.config import Settings
from ragsvc.serving.async_engine import AsyncLLMEngine
from ragsvc.serving.config import EngineConfig
from ragsvc.serving.engine import LLMEngine
from ragsvc.store.keys import KEYS_FILE

logger = logging.getLogger(__name__)


def served_model(engine: LLMEngine, async_engine: AsyncLLMEngine) -> ServedModel:
    """The routes' view of an engine. The tokenizer is a private copy: HF fast tokenizers are not safe to call
    from the event loop while the engine's step thread detokenises with the same object."""
    names = tuple(dict.fromkeys((engine.model_name, engine.config.model)))
    return ServedModel(
        engine=engine, async_engine=async_engine, names=names,
        tokenizer=copy.deepcopy(engine.tokenizer), created=int(time.time()),
    )


def include_model_api(app: FastAPI, *, engine: LLMEngine, async_engine: AsyncLLMEngine) -> None:
    """Serve `/v1/*` on `app` over an engine the caller built and started (and will stop)."""
    app.state.served_model = served_model(engine, async_engine)
    app.include_router(router)


@asynccontextmanager
async def running_engine(app: FastAPI, config: EngineConfig) -> AsyncIterator[None]:
    """Load the engine (seconds; off the event loop), start its step thread, publish it on app.state."""
    engine = await asyncio.to_thread(LLMEngine.from_config, config)
    async_engine = AsyncLLMEngine(engine)
    await async_engine.start()
    await asyncio.to_thread(gc_freeze.loaded, "the model")  # a full collection would stall every decode step
    app.state.served_model = served_model(engine, async_engine)
    logger.info("serving %s (max_model_len %d)", engine.model_name, engine.max_model_len)
    try:
        yield
    finally:
        app.state.served_model = None
        await async_engine.stop()


def model_keys_file(settings: Settings) -> Path:
    """Where the standalone model server reads API keys: `api.keys_file`, else the keys file that `ragsvc keys`
    and the API's /v1/keys write beside the catalog (store/keys.py). Point both servers at one data folder (or
    RAGSVC_API__KEYS_FILE at that file) and they take the same keys."""
    return settings.api.keys_file or settings.store.data_dir / KEYS_FILE


def create_model_app(config: EngineConfig, *, settings: Settings | None = None,
                     on_ready: Callable[[str], None] | None = None) -> FastAPI:
    """The standalone OpenAI-compatible model server, behind the same edge as the API (keys from the keys file,
    trusted hosts, rate limits, request ids). `on_ready` hears the served model's name once the engine runs."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with running_engine(app, config):
            if on_ready is not None:
                on_ready(app.state.served_model.name)
            yield

    app = FastAPI(title="ragsvc model server", version=__version__, lifespan=lifespan,
                  description="OpenAI-compatible completions and chat over ragsvc's paged-attention engine.")
    app.state.served_model = None
    app.state.openai_v1 = True  # every error under /v1/ in OpenAI's shape, unknown paths included
    app.state.openai_limits = OpenAILimits.from_settings(settings.model_api)
    install_error_handlers(app)
    install_edge(app, settings.api, FileKeys(model_keys_file(settings)))
    app.include_router(router)

    @app.api_route("/health", methods=["GET", "HEAD"], tags=["health"], openapi_extra=requires(PUBLIC))
    def health(request: Request) -> JSONResponse:
        served = request.app.state.served_model
        if served is None:
            return JSONResponse({"status": "loading"}, status_code=503)
        return JSONResponse({"status": "ok", "model": served.name, "kv": served.engine.kv_stats()})

    return app


def model_extension(config: EngineConfig) -> Callable[[FastAPI], None]:
    """An Extension for `create_app`: adds `/v1/*` and runs the engine inside the app's existing lifespan."""

    def extend(app: FastAPI) -> None:
        app.state.served_model = None
        app.include_router(router)
        inner = app.router.lifespan_context

        @asynccontextmanager
        async def lifespan(app_: Any) -> AsyncIterator[Any]:
            async with running_engine(app_, config), inner(app_) as state:
                yield state

        app.router.lifespan_context = lifespan

    return extend


@contextlib.contextmanager
def serve_in_thread(
    app: FastAPI, *, host: str = "127.0.0.1", startup_timeout_s: float = 300.0, log_level: str = "warning"
) -> Iterator[str]:
    """Run `app` under uvicorn on a free port in a daemon thread; yields the base URL once startup (including
    the lifespan, i.e. model loading) has finished, and shuts the server down on exit."""
    sock = tcp_socket(socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5,
                                           http=protocol_for(app)))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:  # poll a flag, not the clock: startup ends when the lifespan has run
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"uvicorn on {host}:{port} did not start (see the log above)")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
