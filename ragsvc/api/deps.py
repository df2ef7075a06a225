"""Dependency aliases: routes declare what they need (`store: StoreDep`) in their signature."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ragsvc.config import Settings
from ragsvc.errors import NotReady
from ragsvc.retrieval.vector_store import VectorStore


# Dependencies are `async def` although they do no I/O: FastAPI runs sync ones in the thread pool, and that
# hop costs more than the search itself on a small collection.
async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_vector_store(request: Request) -> VectorStore:
    state = request.app.state
    if getattr(state, "load_error", None):
        raise NotReady(f"the store failed to load: {state.load_error}; see the server log")
    if not getattr(state, "ready", False):
        raise NotReady("indexes are still loading; retry when GET /health answers 200")
    return state.vector_store


async def _vector_store(request: Request) -> VectorStore:
    return get_vector_store(request)


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[VectorStore, Depends(_vector_store)]
