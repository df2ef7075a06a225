"""The listening socket handed to uvicorn, made so that its connections send small writes at once.

asyncio's own event loop turns Nagle's algorithm off (TCP_NODELAY) on a connection only when its socket says
it speaks IPPROTO_TCP, and a socket made as `socket(family, SOCK_STREAM)` says 0, as do the connections it
accepts (uvicorn given a host and port binds through create_server, whose getaddrinfo names the protocol;
uvloop, where installed, sets the option on every TCP connection). uvicorn writes a response's head and body
separately; with Nagle on, the body waits until the client acknowledges the head, and Linux acknowledges at
once only at a connection's start, later after its delayed-ACK timer. Every request on a kept-alive
connection after its first few then took ~40 ms more: /health 44 ms instead of 3.
"""

from __future__ import annotations

import socket


def tcp_socket(family: socket.AddressFamily) -> socket.socket:
    """An unbound TCP stream socket of `family`, its protocol named so that asyncio sets TCP_NODELAY on the
    connections it accepts."""
    return socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
