"""API keys over HTTP (admin scope): while `ragsvc serve` holds the catalog, `ragsvc keys` cannot open it.

POST /v1/keys {name, scopes, collections?} -> 201 with the token, shown this once
GET  /v1/keys                             -> every key (no secrets), revoked ones too
DELETE /v1/keys/{key_id}                   -> the key, revoked (it stays listed)
"""

from __future__ import annotations

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, Field

from ragsvc.api.auth import CatalogKeys, requires
from ragsvc.api.deps import StoreDep
from ragsvc.api.parsed_body import ParsedBodyRoute
from ragsvc.api.request_body import RequestBody
from ragsvc.api.schemas import CollectionName
from ragsvc.store.keys import ApiKeyRecord, KeyScope, mint_key

router = APIRouter(prefix="/v1/keys", tags=["keys"], route_class=ParsedBodyRoute)


class KeyCreate(RequestBody):
    name: str = Field(..., min_length=1, max_length=128, pattern=r"^[ -~]+$", description="who or what uses it")
    scopes: list[KeyScope] = Field(..., min_length=1, max_length=3, description="admin > write > read")
    collections: list[CollectionName] = Field(default_factory=list, max_length=1000,
                                              description="limit the key to these collections; empty = all")


class KeyPublic(BaseModel):
    id: str
    name: str
    scopes: list[str]
    collections: list[str]
    created_at: float
    revoked_at: float | None = None


class KeyCreated(KeyPublic):
    token: str = Field(..., description="send as `Authorization: Bearer <token>`; it is not stored and not shown again")


def _public(record: ApiKeyRecord) -> KeyPublic:
    return KeyPublic(id=record.id, name=record.name, scopes=list(record.scopes), collections=list(record.collections),
                     created_at=record.created_at, revoked_at=record.revoked_at)


def _changed(request: Request) -> None:
    keys = request.app.state.edge.keys
    if isinstance(keys, CatalogKeys):
        keys.invalidate()


@router.post("", status_code=201, response_model=KeyCreated, openapi_extra=requires("admin"))
def create_key(body: KeyCreate, store: StoreDep, request: Request) -> KeyCreated:
    new = mint_key(body.name, body.scopes, body.collections)
    store.catalog.api_keys().add(new.record)
    _changed(request)
    return KeyCreated(**_public(new.record).model_dump(), token=new.token)


@router.get("", response_model=list[KeyPublic], openapi_extra=requires("admin"))
def list_keys(store: StoreDep) -> list[KeyPublic]:
    return [_public(k) for k in store.catalog.api_keys().list()]


@router.delete("/{key_id}", response_model=KeyPublic, openapi_extra=requires("admin"))
def revoke_key(key_id: str = Path(..., max_length=64), *, store: StoreDep, request: Request) -> KeyPublic:
    record = store.catalog.api_keys().revoke(key_id)
    _changed(request)
    return _public(record)
