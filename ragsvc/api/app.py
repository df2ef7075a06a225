"""The FastAPI app factory. The lifespan is the composition root: it builds the store, embedder and indexes.

Loading runs in a background thread so the server answers at once: GET /health says 503 until every
collection's index is open (replayed or rebuilt from the catalog), then 200.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse

from ragsvc import __version__, gc_freeze
from ragsvc.answer.composition import Composition
from ragsvc.api.auth import PUBLIC, CatalogKeys, requires
from ragsvc.api.console import install_console
from ragsvc.api.deps import close_chat
from ragsvc.api.edge import install_edge
from ragsvc.api.errors import install_error_handlers
from ragsvc.api.routes import agents, answer, collections, keys, repos, simulations
from ragsvc.cluster.runtime import connect_from_settings
from ragsvc.config import Settings
from ragsvc.embed.embedder import embedder_from_settings
from ragsvc.index.spec import IndexLimits
from ragsvc.llm.generator import Generator
from ragsvc.llm.in_process import InProcessGenerator
from ragsvc.retrieval.embed_batcher import lanes_for
from ragsvc.retrieval.vector_store import VectorStore
from ragsvc.retrieval.write_limits import WriteLimits
from ragsvc.store.filters import FilterLimits
from ragsvc.store.keys import ApiKeyTable

logger = logging.getLogger(__name__)

Extension = Callable[[FastAPI], None]
"""Adds routers or lifespan state to the app (the in-process model server, repo indexing, ...)."""


def _load(app: FastAPI, settings: Settings, on_error: Callable[[Exception], None] | None,
          on_ready: Callable[[list[str]], None] | None) -> None:
    try:
        embedder = embedder_from_settings(settings.embed)
        store = VectorStore.open(settings.store.data_dir, embedder=embedder,
                                 embedder_factory=lambda: embedder_from_settings(settings.embed),
                                 embed_lanes=lanes_for(settings.api.embed_lanes, os.cpu_count() or 1),
                                 save_interval_s=settings.store.save_interval_s,
                                 index_limits=IndexLimits.from_settings(settings.index_limits),
                                 filter_limits=FilterLimits.from_settings(settings.store),
                                 write_limits=WriteLimits.from_settings(settings.store),
                                 cluster=getattr(app.state, "cluster", None))
        app.state.vector_store = store
        store.load_indexes()
        gc_freeze.loaded("the store")  # before ready: a full collection pauses every request thread
        app.state.ready = True
        names = [c.name for c in store.list_collections()]
        logger.info("ragsvc ready: %d collection(s) loaded from %s", len(names), settings.store.data_dir)
        if on_ready is not None:
            on_ready(names)
    except Exception as exc:  # any failure: the app still starts and reports it through /health and every route
        app.state.load_error = str(exc)
        if on_error is None:
            logger.exception("loading the store failed")
        else:  # the caller reports it (`ragsvc serve`: one line, then exit); the traceback is for debugging
            logger.debug("loading the store failed", exc_info=True)
            on_error(exc)


def _key_table(app: FastAPI) -> ApiKeyTable | None:
    """The catalog's API keys once the store has loaded (None before: requests wait for it with a 503)."""
    store = app.state.vector_store if getattr(app.state, "ready", False) else None
    return None if store is None else store.catalog.api_keys()


def _hosted_generator(app: FastAPI) -> Generator | None:
    """The model this app hosts in-process (`serve --with-model`), as a Generator on the app's event loop."""
    served = getattr(app.state, "served_model", None)
    loop = getattr(app.state, "loop", None)
    if served is None or loop is None:
        return None
    return InProcessGenerator.attach(served.async_engine, loop, engine=served.engine)


def create_app(settings: Settings | None = None, *, extensions: list[Extension] | None = None,
               extra_routers: list[APIRouter] | None = None,
               on_load_error: Callable[[Exception], None] | None = None,
               on_ready: Callable[[list[str]], None] | None = None) -> FastAPI:
    """The API. `on_load_error` is told when the store cannot load (called from the loading thread); without
    one, the failure is logged and the app keeps answering 503 with it, for a supervisor to see. `on_ready` is
    called (from that thread) with the collections' names once the store has loaded and every route answers."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.ready = False
        app.state.load_error = None
        app.state.vector_store = None
        app.state.loop = loop = asyncio.get_running_loop()  # in-process generators submit to the engine here
        # answers and chat turns run on this loop's default executor (asyncio.to_thread), each holding a thread
        # while the model generates for it, so its size is how many the engine can batch at once
        loop.set_default_executor(ThreadPoolExecutor(max_workers=settings.api.work_threads,
                                                     thread_name_prefix="ragsvc-work"))
        # a cluster that cannot be joined stops the start-up with the address in the message (bounded wait)
        app.state.cluster = await asyncio.to_thread(connect_from_settings, settings.cluster)
        loader = threading.Thread(target=_load, args=(app, settings, on_load_error, on_ready), name="ragsvc-load",
                                  daemon=True)
        loader.start()
        try:
            yield
        finally:
            loader.join()
            jobs = getattr(app.state, "repo_jobs", None)
            if jobs is not None:
                jobs.close()  # a running repo-index job must not meet a closed store
            await asyncio.to_thread(close_chat, app.state)  # saves agents' memory indexes
            app.state.composition.close()
            if app.state.vector_store is not None:
                app.state.vector_store.close()

    app = FastAPI(title="ragsvc", version=__version__, lifespan=lifespan,
                  description="Vector store, retrieval and local LLM serving. Errors are JSON {error, detail, "
                              "request_id}. With API keys on, send `Authorization: Bearer <key>`; each operation's "
                              "`x-ragsvc-scope` says which scope it needs.")
    app.state.settings = settings
    app.state.composition = Composition(settings, lambda: _hosted_generator(app))
    install_error_handlers(app)
    install_edge(app, settings.api, CatalogKeys(lambda: _key_table(app)))
    app.include_router(collections.router)
    app.include_router(keys.router)
    app.include_router(repos.router)
    app.include_router(answer.router)
    app.include_router(agents.router)
    app.include_router(simulations.router)
    for router in extra_routers or []:
        app.include_router(router)
    for extend in extensions or []:
        extend(app)
    install_console(app)  # the page at / and its files under /console/ (public; its API calls carry the key)

    @app.api_route("/health", methods=["GET", "HEAD"], tags=["health"], openapi_extra=requires(PUBLIC))
    def health(request: Request) -> JSONResponse:
        state = request.app.state
        if getattr(state, "load_error", None):
            return JSONResponse({"status": "error", "detail": state.load_error}, status_code=503)
        if not getattr(state, "ready", False):
            return JSONResponse({"status": "loading"}, status_code=503)
        return JSONResponse({"status": "ok", "version": __version__})

    return app
