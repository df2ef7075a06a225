"""Every request gets an id: taken from a sane `X-Request-ID` header or made up, echoed in the response header,
put on `request.state.request_id`, and written into the log line and the 500 body of anything unexpected.

This middleware is also the last word on unexpected exceptions. Starlette's own server-error handler sits
outside every middleware, so its 500 is plain text and carries no request id; catching here instead gives the
client `{error, detail, request_id}` (JSON like every other error) and the operator a log line with the same id.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from contextvars import ContextVar
from typing import Any

from starlette.datastructures import MutableHeaders

from ragsvc.api.error_shapes import error_payload
from ragsvc.errors import disk_full

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

HEADER = "x-request-id"
_SANE = re.compile(r"[A-Za-z0-9._:-]{1,64}")
current_request_id: ContextVar[str | None] = ContextVar("ragsvc_request_id", default=None)
"""The id of the request being served, for code that has no scope at hand (a streamed response's body)."""


async def send_json(send: Send, status: int, payload: dict[str, object], *,
                    headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """A whole JSON response from a middleware (which sits outside FastAPI's response classes)."""
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


def new_request_id() -> str:
    return uuid.uuid4().hex[:16]


def request_id_of(scope: Scope) -> str | None:
    return scope.get("state", {}).get("request_id")


def _incoming(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == HEADER.encode():
            given = value.decode("latin-1")
            return given if _SANE.fullmatch(given) else None  # a client's id is logged: keep it printable
    return None


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _incoming(scope) or new_request_id()
        scope.setdefault("state", {})["request_id"] = rid
        token = current_request_id.set(rid)
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                MutableHeaders(scope=message).append(HEADER, rid)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            if disk_full(exc):  # not a bug: an operator's condition, answered 507 like the store's own check
                logger.error("request %s: %s %s failed: the disk is full (%s)", rid, scope.get("method"),
                             scope.get("path"), exc)
                status, code, detail = 507, "insufficient_storage", (
                    f"the disk holding the server's data folder is full; free some space and send the request "
                    f"again (request id {rid})")
            else:
                logger.exception("request %s: %s %s failed", rid, scope.get("method"), scope.get("path"))
                status, code = 500, "internal_error"
                detail = f"unexpected server error; the server log has it under request id {rid}"
            if started:  # the status line is out; nothing better to do than end the connection
                raise
            await send_json(send, status, error_payload(scope, status, code, detail, rid),
                            headers=[(HEADER.encode(), rid.encode())])
        finally:
            current_request_id.reset(token)
