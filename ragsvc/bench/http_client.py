"""A minimal HTTP/1.1 keep-alive client on asyncio streams: the load benchmark's clients.

A load generator on the server's own machine takes CPU from the server it measures. httpx's async pool costs
several times a small request's server time once 32 connections share it (its per-request CPU grows with the
number of connections in the pool), so a driver built on it measures its own overhead as much as the server.
One connection per client, requests written as bytes and responses read by Content-Length (or chunked), keeps
the driver's share small, and the same for every operation, so throughputs and their ratios compare the
server's work.

Only what the benchmark sends is supported: JSON bodies, responses with a length or chunked. A response
asking to close, or a broken connection, reconnects on the next request; the failed request raises
`HttpClientError` (its class name is what the benchmark records as the outcome).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

MAX_HEAD_BYTES = 64 << 10
MAX_BODY_BYTES = 64 << 20


class HttpClientError(Exception):
    """The connection failed, timed out, or the server's answer was not HTTP/1.1 this client reads."""


@dataclass(frozen=True, slots=True)
class RawResponse:
    status_code: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class RawConnection:
    """One persistent connection to `url` (http://host:port); requests on it run one at a time."""

    def __init__(self, url: str, *, timeout_s: float = 60.0) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"url {url!r} must be http://host:port")
        self.host, self.port = parts.hostname, parts.port or 80
        self.timeout_s = timeout_s
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def request(self, method: str, path: str, body: object | None = None) -> RawResponse:
        try:
            return await asyncio.wait_for(self._exchange(method, path, body), self.timeout_s)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            await self.close()
            raise HttpClientError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        if self._streams is not None:
            writer = self._streams[1]
            self._streams = None
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _exchange(self, method: str, path: str, body: object | None) -> RawResponse:
        if self._streams is None:
            self._streams = await asyncio.open_connection(self.host, self.port, limit=MAX_HEAD_BYTES)
        reader, writer = self._streams
        payload = b"" if body is None else json.dumps(body).encode()
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Length: {len(payload)}\r\n"
        if body is not None:
            head += "Content-Type: application/json\r\n"
        writer.write(head.encode("latin-1") + b"\r\n" + payload)
        await writer.drain()
        status, headers = _parse_head(await reader.readuntil(b"\r\n\r\n"))
        if headers.get("transfer-encoding", "").lower() == "chunked":
            data = await _read_chunked(reader)
        else:
            length = int(headers.get("content-length", "0"))
            if not 0 <= length <= MAX_BODY_BYTES:
                raise ValueError(f"response length {length} is out of range")
            data = await reader.readexactly(length)
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return RawResponse(status, data)


def _parse_head(raw: bytes) -> tuple[int, dict[str, str]]:
    """Status and lower-cased headers of a response head (the bytes up to and including the blank line)."""
    lines = raw.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    if not version.startswith("HTTP/1."):
        raise ValueError(f"not an HTTP/1.x status line: {lines[0]!r}")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return int(rest.split(" ", 1)[0]), headers


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    data = bytearray()
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip(), 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers, then the blank line
                pass
            return bytes(data)
        if len(data) + size > MAX_BODY_BYTES:
            raise ValueError("chunked response is larger than the client reads")
        data += await reader.readexactly(size)
        await reader.readexactly(2)  # the CRLF after each chunk
