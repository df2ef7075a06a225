"""The load benchmark's HTTP/1.1 client against a real uvicorn on 127.0.0.1: keep-alive, JSON, chunked bodies,
a server that closes, and a refused connection."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from ragsvc.bench.http_client import HttpClientError, RawConnection
from tests.api.conftest import LiveServer, free_port

seen_ports: list[int] = []


async def app(scope, receive, send) -> None:  # a raw ASGI app: what the client must read, nothing more
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    seen_ports.append(scope["client"][1])
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    path = scope["path"]
    if path == "/chunked":  # no Content-Length: uvicorn sends it chunked
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for part in (b"one ", b"two ", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    headers = [(b"content-type", b"application/json")]
    if path == "/close":
        headers.append((b"connection", b"close"))
    payload = json.dumps({"method": scope["method"], "path": path, "echo": json.loads(body) if body else None})
    await send({"type": "http.response.start", "status": 201 if scope["method"] == "POST" else 200,
                "headers": headers})
    await send({"type": "http.response.body", "body": payload.encode()})


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    server = LiveServer(app, free_port())
    server.start(ready_path="/ready")
    yield server.url
    server.stop()


def test_keep_alive_json_chunked_and_close(url):
    async def go() -> None:
        conn = RawConnection(url, timeout_s=10)
        seen_ports.clear()
        r = await conn.request("POST", "/a", {"q": "héllo", "k": 3})
        assert r.status_code == 201 and r.json() == {"method": "POST", "path": "/a", "echo": {"q": "héllo", "k": 3}}
        assert (await conn.request("GET", "/b")).json()["echo"] is None
        assert (await conn.request("GET", "/chunked")).body == b"one two three"
        assert len(set(seen_ports)) == 1, "one connection for every request"
        await conn.request("GET", "/close")  # the server asks to close: the next request opens a new connection
        assert (await conn.request("DELETE", "/d")).json()["method"] == "DELETE"
        assert len(set(seen_ports)) == 2
        await conn.close()

    asyncio.run(go())


def test_a_refused_connection_raises_the_clients_error():
    async def go() -> None:
        conn = RawConnection(f"http://127.0.0.1:{free_port()}", timeout_s=5)
        with pytest.raises(HttpClientError) as caught:
            await conn.request("GET", "/")
        assert isinstance(caught.value.__cause__, OSError)

    asyncio.run(go())
    with pytest.raises(ValueError, match="must be http"):
        RawConnection("https://example.invalid")
