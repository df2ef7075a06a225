"""The servers' listening sockets give every accepted connection TCP_NODELAY, as asyncio sets it.

Read on the server's side of real connections accepted by asyncio, the way uvicorn accepts them. Without it a
kept-alive connection's responses waited for the client's delayed ACK between their head and body (~40 ms a
request after a connection's first few); the option, not a timing, is what these tests check.
"""

from __future__ import annotations

import asyncio
import socket

from ragsvc.api.tcp_socket import tcp_socket
from ragsvc.cli.server_start import bind


def _accepted_nodelay(listener: socket.socket) -> int:
    """TCP_NODELAY of the server side of one connection that asyncio's own loop accepts on `listener` (uvloop,
    which a uvicorn started earlier in this process may have made the default, sets it on every connection)."""
    async def run() -> int:
        loop = asyncio.get_running_loop()
        seen: asyncio.Future[int] = loop.create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                sock = transport.get_extra_info("socket")
                seen.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        listener.listen()
        server = await loop.create_server(Probe, sock=listener)
        async with server:
            _, writer = await asyncio.open_connection(*listener.getsockname()[:2])
            value = await asyncio.wait_for(seen, 10)
            writer.close()
            return value

    loop = asyncio.SelectorEventLoop()
    try:
        return loop.run_until_complete(run())
    finally:
        loop.close()


def test_a_socket_from_tcp_socket_gives_its_connections_nodelay():
    with tcp_socket(socket.AF_INET) as listener:
        listener.bind(("127.0.0.1", 0))
        assert _accepted_nodelay(listener) != 0


def test_serve_binds_such_a_socket():
    with bind("127.0.0.1", 0) as sock:
        assert sock.proto == socket.IPPROTO_TCP
        assert _accepted_nodelay(sock) != 0
