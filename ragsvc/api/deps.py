"""Dependency aliases: routes declare what they need (`store: StoreDep`) in their signature."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ragsvc.config import Settings
from ragsvc.errors import NotReady
from ragsvc.retrieval.vector_store import VectorStore


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_vector_store(request: Request) -> VectorStore:
    state = request.app.state
    if getattr(state, "load_error", None):
        raise NotReady(f"the store failed to load: {state.load_error}; see the server log")
    if not getattr(state, "ready", False):
        raise NotReady("indexes are still loading; retry when GET /health answers 200")
    return state.vector_store


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[VectorStore, Depends(get_vector_store)]
