"""What stands between the network and the routes, installed the same way on the API and the model server.

Outermost first: request id (every answer carries `X-Request-ID`; unexpected exceptions become JSON 500s, a
full disk 507) -> trusted hosts (400 for a Host header this server does not answer to) -> body limit (413) ->
the JSON guard (401 for a body sent without a valid key, before it is read; 415 for a body not declared JSON,
400 for lone surrogates and non-finite numbers) -> routing -> `authorize` (401 / 403 / 429), an app-wide
dependency so routers included later are covered too.
"""

from __future__ import annotations

from fastapi import Depends, FastAPI

from ragsvc.api.auth import Edge, KeySource, authorize, is_loopback
from ragsvc.api.body_limit import BodyLimitMiddleware
from ragsvc.api.json_guard import JsonGuardMiddleware
from ragsvc.api.rate_limit import RateLimit, TokenBuckets
from ragsvc.api.request_id import RequestIdMiddleware
from ragsvc.api.trusted_hosts import TrustedHostMiddleware, allowed_host_names
from ragsvc.config import ApiSettings


def install_edge(app: FastAPI, api: ApiSettings, keys: KeySource, *, max_body_bytes: int | None = None) -> Edge:
    """Add the middlewares and the `authorize` dependency; call before including routers that take a body."""
    edge = Edge(keys=keys, buckets=TokenBuckets(RateLimit(api.rate_limit_per_s, api.rate_limit_burst)),
                open_without_keys=is_loopback(api.host) or api.insecure, bound_host=api.host)
    app.state.edge = edge
    app.router.dependencies.append(Depends(authorize))
    app.add_middleware(JsonGuardMiddleware)  # each add wraps the previous ones: innermost first
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=max_body_bytes or api.max_body_bytes)
    app.add_middleware(TrustedHostMiddleware, allowed=allowed_host_names(api.host, api.allowed_hosts))
    app.add_middleware(RequestIdMiddleware)
    return edge
