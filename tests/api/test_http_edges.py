"""What a live server answers before any app code runs (ragsvc/api/http_protocol.py): a request uvicorn cannot
parse gets a JSON 400, a request head past MAX_HEAD_BYTES a JSON 431 and a closed connection, and the server
goes on answering."""

from __future__ import annotations

import json
import socket

from ragsvc.api.http_protocol import MAX_HEAD_BYTES
from tests.api.conftest import raw_exchange


def test_a_request_that_is_not_http_gets_a_json_400(live_api) -> None:
    status, headers, body = raw_exchange(live_api.url, b"GET /v1/coll ections HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert status == 400 and headers["content-type"] == "application/json" and headers["connection"] == "close"
    assert len(headers["x-request-id"]) == 16
    payload = json.loads(body)
    assert payload["error"] == "bad_request" and "could not be parsed" in payload["detail"]


def test_a_head_past_the_limit_gets_431_and_the_server_goes_on(live_api) -> None:
    """The head is left unfinished (no blank line): the server must not wait for the rest. The read a request
    begins in is not counted (it may hold the end of the request before), so the head runs well past the limit
    in later reads; the server reads what is still sent and drops it, so the client reads the 431 whole."""
    start = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: "
    status, headers, body = raw_exchange(live_api.url, start, b"a" * (MAX_HEAD_BYTES + 600 * 1024))
    assert status == 431 and headers["connection"] == "close"
    payload = json.loads(body)
    assert payload["error"] == "headers_too_large" and str(MAX_HEAD_BYTES) in payload["detail"]
    status, _, _ = raw_exchange(live_api.url, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    assert status == 200


def test_a_large_head_within_the_limit_and_a_body_after_it_are_served(live_api) -> None:
    """A head near the limit sent in two writes, then a request with a body larger than the limit: both heads
    count only their own bytes."""
    value = b"a" * (MAX_HEAD_BYTES - 1024)
    head = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nX-Big: " + value
    status, _, body = raw_exchange(live_api.url, head[:30000], head[30000:] + b"\r\n\r\n")
    assert status == 200 and json.loads(body)["status"] == "ok"
    document = json.dumps({"documents": [{"id": "big", "text": "word " * (MAX_HEAD_BYTES // 4)}]}).encode()
    post = (b"POST /v1/collections/none/documents HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            b"content-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(document)) + document
    status, _, body = raw_exchange(live_api.url, post)
    assert status == 404 and json.loads(body)["error"] == "collection_not_found"  # routed: the body is no head


def test_a_head_that_does_not_arrive_in_time_gets_408_and_a_silent_client_is_closed(live_api, monkeypatch) -> None:
    """The limit is lowered for the test (the server runs in this process); reading blocks until the server
    closes the connection, so nothing here waits on a clock of its own."""
    from ragsvc.api import http_protocol

    monkeypatch.setattr(http_protocol, "HEAD_TIMEOUT_S", 0.3)
    status, headers, body = raw_exchange(live_api.url, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: a")
    assert status == 408 and headers["connection"] == "close" and json.loads(body)["error"] == "request_timeout"
    host, port = live_api.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        assert sock.recv(1) == b""  # closed, with nothing said



def test_a_body_that_stops_arriving_gets_408(live_api, monkeypatch) -> None:
    """A body declared 1,000 bytes long, 10 sent: the request is answered once the body has been idle too long
    (the limit lowered for the test; the read blocks until the server answers)."""
    from ragsvc.api import body_limit

    monkeypatch.setattr(body_limit, "BODY_IDLE_S", 0.3)
    head = (b"POST /v1/collections/sample/search HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"content-type: application/json\r\ncontent-length: 1000\r\n\r\n")
    status, headers, body = raw_exchange(live_api.url, head + b'{"query": ')
    assert status == 408 and headers["connection"] == "close"
    payload = json.loads(body)
    assert payload["error"] == "request_timeout" and "10 bytes received" in payload["detail"]


def test_pipelined_requests_are_not_taken_for_one_long_head(live_api) -> None:
    """Ten thousand small requests in one write: the server reads them in large pieces, most ending inside a
    head, none of which may count toward a limit meant for one request's head."""
    request = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    count = 10_000
    host, port = live_api.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(request * count)
        received = bytearray()
        while received.count(b"HTTP/1.1 200 OK") < count:
            chunk = sock.recv(1 << 20)
            assert chunk, f"closed after {received.count(b'HTTP/1.1 200 OK')} answers: {bytes(received[-300:])!r}"
            received += chunk
