"""Collections, their documents, and search."""

from __future__ import annotations

import json
import time
from dataclasses import asdict

from fastapi import APIRouter, Query, Request, Response

from ragsvc.api.auth import requires, visible_to
from ragsvc.api.deps import SettingsDep, StoreDep
from ragsvc.api.parsed_body import ParsedBodyRoute
from ragsvc.api.retrieval_options import retrieval_options
from ragsvc.api.schemas import (
    CollectionCreate,
    CollectionPublic,
    DocumentsCreate,
    DocumentsCreated,
    SearchRequest,
    SearchResponse,
)
from ragsvc.errors import CollectionNotFound, InvalidInput, PayloadTooLarge
from ragsvc.retrieval.vector_store import CollectionInfo, VectorStore
from ragsvc.types import DocumentInput, ServedBy

router = APIRouter(prefix="/v1/collections", tags=["collections"], route_class=ParsedBodyRoute)
MAX_OFFSET = 2**31 - 1
"""Offsets beyond this are refused (400) instead of reaching duckdb, which fails above int64."""


def _public(info: CollectionInfo, store: VectorStore) -> CollectionPublic:
    data = asdict(info)
    data["index"] = info.index.to_dict()
    try:  # the server opens every index at start-up, so this measures and never loads
        data["index_bytes"] = store.index_bytes(info.name)
    except CollectionNotFound:  # deleted since it was listed
        data["index_bytes"] = None
    return CollectionPublic(**data)


@router.post("", status_code=201, response_model=CollectionPublic, openapi_extra=requires("admin"))
def create_collection(body: CollectionCreate, store: StoreDep) -> CollectionPublic:
    info = store.create_collection(body.name, index=body.index, chunk_tokens=body.chunk_tokens,
                                   chunk_overlap=body.chunk_overlap)
    return _public(info, store)


@router.get("", response_model=list[CollectionPublic], openapi_extra=requires("read", lists_collections=True))
def list_collections(request: Request, store: StoreDep) -> list[CollectionPublic]:
    """Every collection, or only those an API key limited to collections names."""
    infos = store.list_collections()
    visible = set(visible_to(request, [c.name for c in infos]))
    return [_public(c, store) for c in infos if c.name in visible]


@router.get("/{name}", response_model=CollectionPublic)
def get_collection(name: str, store: StoreDep) -> CollectionPublic:
    return _public(store.get_collection(name), store)


@router.delete("/{name}", status_code=204, openapi_extra=requires("admin"))
def delete_collection(name: str, store: StoreDep) -> Response:
    store.delete_collection(name)
    return Response(status_code=204)


@router.post("/{name}/documents", status_code=201, response_model=DocumentsCreated)
def add_documents(name: str, body: DocumentsCreate, store: StoreDep, settings: SettingsDep) -> DocumentsCreated:
    limits = settings.api
    if not body.documents:
        raise InvalidInput("documents is empty; send at least one {\"text\": ...}")
    if len(body.documents) > limits.max_batch_documents:
        raise PayloadTooLarge(f"{len(body.documents)} documents in one batch; the limit is "
                              f"{limits.max_batch_documents} (RAGSVC_API__MAX_BATCH_DOCUMENTS)")
    for position, doc in enumerate(body.documents):
        if len(doc.text) > limits.max_document_chars:
            raise PayloadTooLarge(f"document {position} has {len(doc.text)} characters; the limit is "
                                  f"{limits.max_document_chars}: split it into several documents")
    started = time.perf_counter()
    ids = store.add_documents(
        name, [DocumentInput(text=d.text, id=d.id, metadata=d.metadata, source=d.source) for d in body.documents])
    return DocumentsCreated(ids=ids, collection=name, took_ms=round((time.perf_counter() - started) * 1000, 3))


@router.get("/{name}/documents")
def list_documents(name: str, store: StoreDep, limit: int = Query(100, ge=1, le=10_000),
                   offset: int = Query(0, ge=0, le=MAX_OFFSET)) -> list[dict]:
    return store.list_documents(name, limit=limit, offset=offset)


# `:path` so an id holding `/` (sent raw or as %2F) reaches the route: every stored id can be fetched and deleted.
@router.get("/{name}/documents/{document_id:path}")
def get_document(name: str, document_id: str, store: StoreDep) -> dict:
    return store.get_document(name, document_id)


@router.delete("/{name}/documents/{document_id:path}", status_code=204)
def delete_document(name: str, document_id: str, store: StoreDep) -> Response:
    store.delete_document(name, document_id)
    return Response(status_code=204)


@router.post("/{name}/search", response_model=SearchResponse, openapi_extra=requires("read"))
def search(name: str, body: SearchRequest, request: Request, store: StoreDep, settings: SettingsDep) -> Response:
    limits = settings.api
    if not 1 <= body.k <= limits.max_k:
        raise InvalidInput(f"k must be between 1 and {limits.max_k} (RAGSVC_API__MAX_K), got {body.k}")
    if body.query is not None and len(body.query) > limits.max_query_chars:
        raise InvalidInput(f"query has {len(body.query)} characters; the limit is {limits.max_query_chars}")
    stages: list[str] = []
    if body.uses_pipeline:
        if body.query is None or body.vector is not None:
            raise InvalidInput("mode lexical / hybrid, hyde and rerank search by text: send `query`, not `vector`")
        if body.dims is not None or body.shortlist is not None or body.ef_search is not None or \
                body.deadline_ms is not None or body.allow_partial:
            raise InvalidInput("dims, shortlist, ef_search, deadline_ms and allow_partial tune plain dense search; "
                               "drop them, or use mode dense without hyde and rerank")
        options = retrieval_options(body, body.k)
        found = request.app.state.composition.pipeline(store).retrieve(name, body.query, options)
        hits, timings, stages = found.hits, found.timings_ms, found.stages
        served_by = found.served_by or ServedBy.lexical()
    else:
        result = store.search(name, query=body.query, vector=body.vector, k=body.k, filter=body.filter,
                              dims=body.dims, shortlist=body.shortlist, ef_search=body.ef_search,
                              deadline_ms=body.deadline_ms, allow_partial=body.allow_partial)
        hits, timings, served_by = result.hits, result.timings_ms, result.served_by
    # Serialised directly: re-validating the response model costs as much as a small search (the hot path).
    body_out = {"hits": [{"chunk_id": h.chunk_id, "document_id": h.document_id, "text": h.text, "score": h.score,
                          "metadata": h.metadata} for h in hits],
                "timings_ms": timings, "served_by": str(served_by), "served_by_detail": served_by.to_dict(),
                "stages": stages, "partial": bool(served_by.missing_shards)}
    return Response(json.dumps(body_out, ensure_ascii=False), media_type="application/json")
