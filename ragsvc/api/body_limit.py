"""ASGI middleware that refuses request bodies above a size with 413, before anything parses them, and bodies
that stop arriving with 408.

A client that declared a body and then sent it a byte at a time, or not at all, held its request (and its
connection) for as long as it liked: uvicorn has no timeout for a body. While a request's body is incomplete,
each read waits at most BODY_IDLE_S for the next piece. Once the body is whole, reads are not timed: a streaming
route waits on them for the client's disconnect for as long as its answer lasts.
"""

from __future__ import annotations

import asyncio

from ragsvc.api.error_shapes import error_payload
from ragsvc.api.request_id import ASGIApp, Message, Receive, Scope, Send, send_json

BODY_IDLE_S = 30.0
"""Seconds a request body may go without a new piece before the request is answered 408 (as the request head,
api/http_protocol.py)."""


class BodyTooLarge(Exception):
    pass


class BodyStalled(Exception):
    pass


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._refuse(scope, send)
            return
        received = 0
        started = False
        body_done = False

        async def limited_receive() -> Message:
            nonlocal received, body_done
            if body_done:
                return await receive()
            try:
                async with asyncio.timeout(BODY_IDLE_S):  # a deadline on this task, not a task of its own
                    message = await receive()
            except TimeoutError:
                raise BodyStalled from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyTooLarge
                body_done = not message.get("more_body", False)
            else:
                body_done = True  # the client is gone: what follows is waited on as it is
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._refuse(scope, send)
        except BodyStalled:
            if not started:
                detail = (f"the request body stopped arriving: nothing for {BODY_IDLE_S} s, "
                          f"{received} bytes received so far")
                await send_json(send, 408, error_payload(scope, 408, "request_timeout", detail),
                                headers=[(b"connection", b"close")])

    async def _refuse(self, scope: Scope, send: Send) -> None:
        detail = (f"request body exceeds {self.max_body_bytes} bytes (RAGSVC_API__MAX_BODY_BYTES); "
                  "send smaller batches")
        await send_json(send, 413, error_payload(scope, 413, "payload_too_large", detail))
