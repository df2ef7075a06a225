"""API keys at the edge: who is calling, may this key call this route on this collection, and the rate limit.

`authorize` is an app-wide dependency (`app.router.dependencies`), so every route, including routers added
later, goes through it. A route declares the scope it needs with `openapi_extra=requires("read")` (which also
shows in the OpenAPI document as `x-ragsvc-scope`); without a declaration GET/HEAD need `read` and other
methods `write`. `requires(PUBLIC)` opts a route out (health).

Keys are on as soon as the key table holds any key, revoked ones included, so revoking the last key locks the
server rather than opening it. With no key at all the server is open only while it listens on loopback (or
was started with `--insecure`); `ragsvc serve` refuses other addresses without keys, and this module answers
401 as a second line of defence.

A key limited to collections may call only routes that name one of them: the `{name}` of
`/v1/collections/{name}/...`, or the `collection` field of a JSON body (`/v1/answer`, `/v1/repos`). A route
that lists collections (`requires(..., lists_collections=True)`) is open to it too, and shows it only its own
(`visible_to`): refusing the list would leave such a key no way to discover what it may search.

Where the keys come from is a `KeySource`: the API reads the catalog's table (cached; the key routes invalidate
the cache), the model server reads the keys file (store/keys.py) and rereads it when it changes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from fastapi import Request

from ragsvc.api.rate_limit import TokenBuckets
from ragsvc.errors import Forbidden, InvalidInput, NotReady, RateLimited, Unauthorized
from ragsvc.store.keys import ApiKeyRecord, ApiKeyTable, parse_token, read_keys_file

SCOPE_KEY = "x-ragsvc-scope"
LISTS_KEY = "x-ragsvc-lists-collections"
PUBLIC = "public"
_LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def requires(scope: str, *, lists_collections: bool = False) -> dict[str, Any]:
    """`openapi_extra` for a route: `@router.post("/x", openapi_extra=requires("admin"))`.
    `lists_collections`: the route lists collections and filters them with `visible_to` itself."""
    return {SCOPE_KEY: scope, LISTS_KEY: True} if lists_collections else {SCOPE_KEY: scope}


def visible_to(request: Request, names: Sequence[str]) -> list[str]:
    """The names of `names` the request's API key may see: all of them without keys or with an unlimited key."""
    key: ApiKeyRecord | None = getattr(request.state, "api_key", None)
    return [n for n in names if key is None or key.allows_collection(n)]


def is_loopback(host: str) -> bool:
    return host in _LOOPBACK or host.startswith("127.")


class KeySource(Protocol):
    def keys(self) -> Sequence[ApiKeyRecord] | None:
        """Every stored key (revoked too), or None while they cannot be read yet (the store still loading)."""
        ...


class CatalogKeys:
    """The API's keys: the catalog's table, read once and again after each change through the key routes (only
    this process can write the catalog while it holds it open)."""

    def __init__(self, table: Callable[[], ApiKeyTable | None]) -> None:
        self._table = table
        self._cached: list[ApiKeyRecord] | None = None

    def keys(self) -> Sequence[ApiKeyRecord] | None:
        if self._cached is None:
            table = self._table()
            if table is None:
                return None
            self._cached = table.list()
        return self._cached

    def invalidate(self) -> None:
        self._cached = None


class FileKeys:
    """The model server's keys: the keys file, reread when its modification time changes (looked at once a
    second at most, so a revocation takes effect within about a second)."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._clock = clock
        self._checked_at = float("-inf")
        self._version: tuple[int, int, int] | None = None
        self._keys: list[ApiKeyRecord] = []

    def keys(self) -> Sequence[ApiKeyRecord]:
        now = self._clock()
        if now - self._checked_at >= 1.0:
            self._checked_at = now
            try:
                stat = self.path.stat()  # the file is replaced by rename: a new inode for every change
                version: tuple[int, int, int] | None = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
            except FileNotFoundError:
                version = None
            if version != self._version:
                try:
                    self._keys = read_keys_file(self.path) if version is not None else []
                except InvalidInput as exc:  # fail closed: a damaged file must not open the server
                    self._checked_at = float("-inf")
                    raise NotReady(f"{exc.message}; every request waits (503) until it is repaired") from exc
                self._version = version
        return self._keys


@dataclass(frozen=True)
class Edge:
    """What `authorize` needs, built once per app (app.state.edge)."""

    keys: KeySource
    buckets: TokenBuckets
    open_without_keys: bool
    """True on loopback or with --insecure: with no key stored, every caller may do everything."""
    bound_host: str


def route_scope(request: Request) -> str:
    route = request.scope.get("route")
    declared = (getattr(route, "openapi_extra", None) or {}).get(SCOPE_KEY)
    if declared:
        return str(declared)
    return "read" if request.method in ("GET", "HEAD", "OPTIONS") else "write"


def _authenticate(request: Request, keys: Sequence[ApiKeyRecord]) -> ApiKeyRecord:
    return authenticate(request.headers.get("authorization", ""), keys)


def authenticate(authorization: str, keys: Sequence[ApiKeyRecord]) -> ApiKeyRecord:
    """The key an `Authorization` header value names, or Unauthorized saying what is wrong with it."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("this server needs an API key: send `Authorization: Bearer rsk_...` "
                           "(an admin creates one with `ragsvc keys create`)")
    parsed = parse_token(token.strip())
    key = next((k for k in keys if parsed and k.id == parsed[0]), None)
    if parsed is None or key is None or not key.matches(parsed[1]):
        raise Unauthorized("the API key is not valid: check for a typo or ask an admin for a new one")
    if not key.active:
        raise Unauthorized(f"the API key {key.id} was revoked; ask an admin for a new one")
    return key


async def _collection_of(request: Request) -> str | None:
    name = request.path_params.get("name")
    route_path = getattr(request.scope.get("route"), "path", "")
    if isinstance(name, str) and route_path.startswith("/v1/collections/{name}"):
        return name
    if request.method in ("POST", "PUT", "PATCH"):
        try:
            body = json.loads(await request.body())
        except (ValueError, RecursionError):
            return None
        if isinstance(body, dict) and isinstance(body.get("collection"), str):
            return body["collection"]
    return None


async def _check_access(request: Request, key: ApiKeyRecord, scope: str) -> None:
    if not key.grants(scope):
        raise Forbidden(f"the API key {key.id} has scopes {', '.join(key.scopes)}; {request.method} "
                        f"{getattr(request.scope.get('route'), 'path', request.url.path)} needs {scope}")
    route_extra = getattr(request.scope.get("route"), "openapi_extra", None) or {}
    if key.collections and not route_extra.get(LISTS_KEY):
        collection = await _collection_of(request)
        if collection is None or not key.allows_collection(collection):
            names = ", ".join(key.collections)
            raise Forbidden(f"the API key {key.id} is limited to the collections {names}; this request "
                            + (f"names {collection!r}" if collection else "names no collection"))


def no_keys_message(edge: Edge) -> str:
    return (f"no API key exists and this server listens on {edge.bound_host}, beyond loopback; "
            "create one with `ragsvc keys create` (or start it with --insecure)")


def unauthenticated(edge: Edge, authorization: str) -> str | None:
    """Why a request with this `Authorization` header value gets 401 whatever route it asks for, or None (also
    while the keys are still loading: `authorize` answers that). What `authorize` says, decided from the headers
    alone, so a body can be refused before it is read."""
    keys = edge.keys.keys()
    if keys is None:
        return None
    if keys:
        try:
            authenticate(authorization, keys)
        except Unauthorized as exc:
            return exc.message
        return None
    return None if edge.open_without_keys else no_keys_message(edge)


async def authorize(request: Request) -> None:
    """The app-wide dependency: 401 / 403 / 429 / 503 before the route runs; sets request.state.api_key."""
    scope = route_scope(request)
    if scope == PUBLIC:
        return
    edge: Edge = request.app.state.edge
    keys = edge.keys.keys()
    if keys is None:
        raise NotReady("API keys are still loading with the store; retry when GET /health answers 200")
    key: ApiKeyRecord | None = None
    if keys:
        key = _authenticate(request, keys)
        await _check_access(request, key, scope)
        who = f"key:{key.id}"
    elif edge.open_without_keys:
        who = f"addr:{request.client.host if request.client else '-'}"
    else:
        raise Unauthorized(no_keys_message(edge))
    request.state.api_key = key
    wait_s = edge.buckets.take(who)
    if wait_s > 0:
        raise RateLimited(f"too many requests for {who.split(':')[0]} {who.split(':', 1)[1]}; the limit is "
                          f"{edge.buckets.limit.rate_per_s:g}/s with bursts of {edge.buckets.limit.burst} "
                          "(RAGSVC_API__RATE_LIMIT_PER_S, RAGSVC_API__RATE_LIMIT_BURST)", retry_after_s=wait_s)
