"""Dependency aliases: routes declare what they need (`store: StoreDep`) in their signature."""

from __future__ import annotations

import threading
from typing import Annotated, Any

from fastapi import Depends, Request

from ragsvc.agents.chat_service import ChatService
from ragsvc.agents.registry import AgentRegistry
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


_chat_guard = threading.Lock()
CHAT_INDEX_FOLDER = "chat-agents"
"""Agents' memory indexes live in <data dir>/chat-agents/<agent>, beside the collections' indexes."""


def get_chat(request: Request) -> ChatService:
    """The chat service over the store's catalog, built on first use (after the store has loaded)."""
    store = get_vector_store(request)
    state = request.app.state
    with _chat_guard:
        if getattr(state, "agent_chat", None) is None:
            registry = AgentRegistry(store.catalog.chat_tables(), store.catalog.memory_tables(),
                                     embedder=store.embedder, index_root=store.data_dir / CHAT_INDEX_FOLDER)
            state.agent_chat = ChatService(registry)
        return state.agent_chat


def close_chat(state: Any) -> None:
    """Stop the importance workers and save the agents' memory indexes; before the store closes, and off the
    event loop (a worker may be waiting on the in-process engine, which runs on that loop)."""
    chat = getattr(state, "agent_chat", None)
    if chat is not None:
        chat.close()
        chat.registry.close()
        state.agent_chat = None


async def _chat(request: Request) -> ChatService:
    return get_chat(request)


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[VectorStore, Depends(_vector_store)]
ChatDep = Annotated[ChatService, Depends(_chat)]
