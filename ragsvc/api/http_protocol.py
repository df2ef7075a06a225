"""uvicorn's HTTP protocol, with the 400 it sends for a request it cannot parse written in the API's error shape.

A request line or header uvicorn cannot parse (binary on the port, a space in the path, a bad header name) is
refused by uvicorn itself, before any middleware or route runs, as plain text: "Invalid HTTP request
received." Every other error either server sends is JSON, so a client that reads errors as JSON met one it
could not read. The subclass sends the same status, headers and connection close with a JSON body: ragsvc's
`{error, detail}` for `ragsvc serve`, OpenAI's shape for `ragsvc serve-model` (whose clients parse that one).
Which parser runs is uvicorn's own choice ("auto": httptools when installed, else h11).
"""

from __future__ import annotations

import json
from typing import Any

from uvicorn.protocols.http.auto import AutoHTTPProtocol

from ragsvc.api.error_shapes import error_body, openai_error_body

BAD_REQUEST = "bad_request"


def _payload(message: str, *, openai: bool) -> bytes:
    body = openai_error_body(400, message, code=BAD_REQUEST) if openai else error_body(BAD_REQUEST, message)
    return json.dumps(body).encode("utf-8")


def _json_400(protocol: Any, message: str, *, openai: bool) -> None:
    """Write a whole 400 response straight to the connection and close it (as uvicorn's own does): the parser
    is in an error state, so nothing else will be read from it."""
    body = _payload(f"{message.rstrip('.')}: the request line or a header could not be parsed as HTTP/1.1",
                    openai=openai)
    head = [b"HTTP/1.1 400 Bad Request\r\n"]
    for name, value in protocol.server_state.default_headers:
        head.extend([name, b": ", value, b"\r\n"])
    head.extend([b"content-type: application/json\r\n", b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                 b"connection: close\r\n", b"\r\n"])
    protocol.transport.write(b"".join(head) + body)
    protocol.transport.close()


class JsonErrorProtocol(AutoHTTPProtocol):  # type: ignore[misc,valid-type]
    """uvicorn's protocol; a request it cannot parse gets ragsvc's JSON error shape."""

    def send_400_response(self, msg: str) -> None:
        _json_400(self, msg, openai=False)


class OpenAIJsonErrorProtocol(AutoHTTPProtocol):  # type: ignore[misc,valid-type]
    """uvicorn's protocol; a request it cannot parse gets OpenAI's error shape (the model server)."""

    def send_400_response(self, msg: str) -> None:
        _json_400(self, msg, openai=True)


def protocol_for(app: Any) -> type:
    """The protocol class for `app`: OpenAI's shape for the model server's app (`state.openai_v1`)."""
    openai = bool(getattr(getattr(app, "state", None), "openai_v1", False))
    return OpenAIJsonErrorProtocol if openai else JsonErrorProtocol
