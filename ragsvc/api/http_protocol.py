"""uvicorn's HTTP protocol with two edges of its own: errors it answers before any app code runs are written in
the API's error shape, and a request's head (request line and headers) is bounded.

- A request line or header uvicorn cannot parse (binary on the port, a space in the path, a bad header name) is
  refused by uvicorn itself, before any middleware or route runs, as plain text: "Invalid HTTP request
  received." Every other error either server sends is JSON, so a client that reads errors as JSON met one it
  could not read. The subclasses send the same 400 with a JSON body: ragsvc's `{error, detail}` for
  `ragsvc serve`, OpenAI's shape for `ragsvc serve-model` (whose clients parse that one).
- httptools (uvicorn's parser when it is installed) sets no limit on a head, and builds a long header value or
  URL by concatenating each piece it reads to the last, on the event loop: one 100 MB header held every other
  request of the server for 11 s (50 MB: 2.5 s; measured with /health pinged beside it), before any key was
  checked. A head past MAX_HEAD_BYTES is answered 431 and the connection closed; the bytes read so far are
  counted, so the parser never holds more than that plus one read. (Without httptools, uvicorn's h11 parser
  has its own limit of 16 KiB and answers 400.) A head must also arrive within HEAD_TIMEOUT_S: a client that
  connected and sent nothing, or its head a byte at a time, held its connection for ever (408, or a plain
  close when nothing came).
"""

from __future__ import annotations

import json
from typing import Any

from uvicorn.protocols.http.auto import AutoHTTPProtocol

from ragsvc.api.error_shapes import error_body, openai_error_body
from ragsvc.api.request_id import new_request_id

MAX_HEAD_BYTES = 64 * 1024
"""Most bytes of a request line and headers: twice what nginx accepts by default (header lines of up to 8 KiB
in four buffers) and four times Node's 16 KiB; an API key and the usual headers take a few hundred bytes."""
HEAD_TIMEOUT_S = 30.0
"""Seconds from a connection's opening (on a kept-alive one, from its next request's first byte; uvicorn closes
one idle between requests after 5 s) to the end of the request's head. A client that connects and sends
nothing, or its head a byte at a time, held a connection (a file descriptor) for as long as it liked: enough of
them (slowloris) and the server can accept no one. nginx waits 60 s."""
REASONS = {400: b"Bad Request", 408: b"Request Timeout", 431: b"Request Header Fields Too Large"}
BOUNDS_HEADS = AutoHTTPProtocol.__name__ == "HttpToolsProtocol"
"""The head limits hook httptools' callbacks; without httptools uvicorn runs h11, which has a size limit of its
own and no callbacks to hook."""


LINGER_S = 2.0
"""After a 431, how long the connection keeps reading (and dropping) what the client still sends before it
closes. Closed at once with the client's bytes unread, the kernel answers with a reset, which can destroy the
431 before the client has read it."""


def _send_json_error(protocol: Any, status: int, code: str, message: str, *, openai: bool,
                     linger: bool = False) -> None:
    """Write a whole JSON error response straight to the connection and close it (as uvicorn's own 400 does):
    the parser is mid-request or in an error state, so nothing more is parsed from it. With `linger`, the
    connection is half-closed instead and closed LINGER_S later (or when the client closes first)."""
    payload = openai_error_body(status, message, code=code) if openai else error_body(code, message)
    body = json.dumps(payload).encode("utf-8")
    head = [b"HTTP/1.1 %d %s\r\n" % (status, REASONS[status])]
    for name, value in protocol.server_state.default_headers:
        head.extend([name, b": ", value, b"\r\n"])
    # an id like every other answer's (request_id.py), though no log line carries it: the request never reached
    # the app (the protocol logs a warning of its own)
    head.extend([b"content-type: application/json\r\n", b"content-length: %d\r\n" % len(body),
                 b"x-request-id: %s\r\n" % new_request_id().encode("ascii"), b"connection: close\r\n",
                 b"\r\n"])
    protocol.transport.write(b"".join(head) + body)
    if linger and protocol.transport.can_write_eof():
        protocol.transport.write_eof()
        protocol.loop.call_later(LINGER_S, protocol.transport.close)
    else:
        protocol.transport.close()


class _JsonEdges(AutoHTTPProtocol):  # type: ignore[misc,valid-type]
    """uvicorn's protocol (httptools or h11, as uvicorn picks) with the edges the module docstring describes."""

    openai = False
    # per connection, set by the callbacks below (class defaults until the first one runs)
    _reading_head = False  # between a request's first byte and the end of its head
    _head_bytes = 0  # bytes counted toward MAX_HEAD_BYTES for the head being read
    _messages = 0  # requests begun on this connection
    _head_timer: Any = None  # closes the connection HEAD_TIMEOUT_S after it opened or a request began
    _draining = False  # answered 431: what comes is dropped until the close

    def send_400_response(self, msg: str) -> None:
        _send_json_error(self, 400, "bad_request",
                         f"{msg.rstrip('.')}: the request line or a header could not be parsed as HTTP/1.1",
                         openai=self.openai)

    # httptools' callbacks (h11's protocol has none of these and bounds a head itself)
    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        if BOUNDS_HEADS:
            self._head_timer = self.loop.call_later(HEAD_TIMEOUT_S, self._head_timed_out)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        self._reading_head = True
        self._messages += 1
        if self._head_timer is None:  # the next request on a kept-alive connection
            self._head_timer = self.loop.call_later(HEAD_TIMEOUT_S, self._head_timed_out)

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._stop_head_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if not self._reading_head:
            self.transport.close()  # connected and sent nothing: nothing to answer
            return
        self._reading_head = False
        self.logger.warning("Request head not complete after %s s; connection closed (408).", HEAD_TIMEOUT_S)
        _send_json_error(self, 408, "request_timeout",
                         f"the request line and headers did not arrive within {HEAD_TIMEOUT_S} s", openai=self.openai)

    def data_received(self, data: bytes) -> None:
        if self._draining:
            return  # after a 431: read and dropped until the client stops or the close comes
        in_head, messages = self._reading_head, self._messages
        super().data_received(data)
        if not self._reading_head or self.transport.is_closing():
            return
        # A read counts when it began inside this head and left it unfinished: all of it is head. A read in
        # which the request began may also hold the end of the one before (pipelined, its body say) and is not
        # counted, so the parser holds at most one read more than the limit.
        if not in_head or self._messages != messages:
            return
        self._head_bytes += len(data)
        if self._head_bytes > MAX_HEAD_BYTES:
            self._reading_head = False
            self.logger.warning("Request head over %d bytes refused (431).", MAX_HEAD_BYTES)
            _send_json_error(self, 431, "headers_too_large",
                             f"the request line and headers run past {MAX_HEAD_BYTES} bytes; send long values in "
                             "the body", openai=self.openai, linger=True)
            self._draining = True
            self._stop_head_timer()


class JsonErrorProtocol(_JsonEdges):
    """uvicorn's protocol for `ragsvc serve`: its own errors in ragsvc's shape, heads bounded."""


class OpenAIJsonErrorProtocol(_JsonEdges):
    """uvicorn's protocol for the model server: its own errors in OpenAI's shape, heads bounded."""

    openai = True


def protocol_for(app: Any) -> type:
    """The protocol class for `app`: OpenAI's shape for the model server's app (`state.openai_v1`)."""
    openai = bool(getattr(getattr(app, "state", None), "openai_v1", False))
    return OpenAIJsonErrorProtocol if openai else JsonErrorProtocol
