"""The Host-header check: a request must name this server by one of the names it expects.

A page on any web site can make a browser send requests to 127.0.0.1 by giving its own host name a DNS record
that points there (DNS rebinding); the browser then treats our answers as that site's. Such requests still
carry the attacker's host name in `Host:`, so refusing unknown names (400, before routing) closes the hole.
Loopback names are always accepted, plus the address the server is bound to and `allowed_hosts`; `*` turns
the check off. An HTTP/1.0 request may carry no `Host:` at all (old probes and load balancers' health checks
send none); a browser always sends one, so such a request cannot be a rebinding one and is let through.
"""

from __future__ import annotations

from collections.abc import Iterable

from ragsvc.api.error_shapes import error_payload
from ragsvc.api.request_id import ASGIApp, Receive, Scope, Send, send_json

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
_WILDCARDS = ("0.0.0.0", "::", "")


def allowed_host_names(bound_host: str, extra: Iterable[str]) -> frozenset[str]:
    names = {*LOOPBACK_HOSTS, *(h.strip().lower().strip("[]") for h in extra)}
    if bound_host not in _WILDCARDS:
        names.add(bound_host.lower().strip("[]"))
    return frozenset(names)


def host_name(header: str) -> str:
    """`example.com:8000` -> example.com, `[::1]:80` -> ::1 (lower case, port and trailing dot dropped)."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    name = header.rpartition(":")[0] if header.count(":") == 1 else header
    return name.rstrip(".")


class TrustedHostMiddleware:
    def __init__(self, app: ASGIApp, *, allowed: frozenset[str]) -> None:
        self.app = app
        self.allowed = allowed
        self.any = "*" in allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.any:
            await self.app(scope, receive, send)
            return
        given = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"host"), None)
        if (given is None and scope.get("http_version") == "1.0") or host_name(given or "") in self.allowed:
            await self.app(scope, receive, send)
            return
        detail = (f"Host {given!r} is not one this server answers to; use one of {', '.join(sorted(self.allowed))} "
                  "or add the name to RAGSVC_API__ALLOWED_HOSTS")
        await send_json(send, 400, error_payload(scope, 400, "untrusted_host", detail))
