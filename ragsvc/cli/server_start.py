"""What `ragsvc serve` and `ragsvc serve-model` check before uvicorn starts, and how they run it.

A server that cannot start must say why in one line and exit at once. Left to uvicorn, a port in use is
found only after the app's startup has run (for serve-model, after the model has loaded: 30 s and more), and
a model path that does not exist is a traceback from inside the lifespan. So the port is bound here first and
the socket handed to uvicorn (no window in which another process can take it), and the model is resolved here
first. A store whose background load fails stops `ragsvc serve` too: left running, it would answer 503 to
every request, which at a terminal looks like a server that is up.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from ragsvc.api.tcp_socket import tcp_socket
from ragsvc.cli.common import fail
from ragsvc.errors import RagsvcError

if TYPE_CHECKING:
    from fastapi import FastAPI

    from ragsvc.serving.config import EngineConfig

_BIND_HINTS = {
    errno.EADDRINUSE: "another process is listening there; stop it, or pass --port with a free port",
    errno.EADDRNOTAVAIL: "this machine has no such address; pass --host 127.0.0.1, 0.0.0.0 or one of its own",
    errno.EACCES: "ports below 1024 need privileges; pass --port 1024 or higher",
}


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port), as uvicorn would bind it, or exit with one line saying why not."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except OSError as exc:  # a host name that does not resolve
        raise fail(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pass --host 127.0.0.1, 0.0.0.0 or an "
                   "address of this machine") from exc
    sock = tcp_socket(family)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: restarts reuse TIME_WAIT
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        hint = _BIND_HINTS.get(exc.errno or 0, "pass another --host or --port")
        raise fail(f"cannot listen on {host}:{port} ({exc.strerror or exc}): {hint}") from exc
    sock.set_inheritable(True)
    return sock


def check_model(config: EngineConfig) -> None:
    """Exit with one line when the model cannot be found or its device is not there (`--device cuda` without a
    GPU). Resolving the model here also converts a GGUF once, which the engine would do anyway in the server's
    startup: the engine then finds the converted folder."""
    from ragsvc.serving.config import resolve_device
    from ragsvc.serving.loader import resolve_model_dir

    try:
        resolve_device(config)
        resolve_model_dir(config.model, cache_dir=config.cache_dir)
    except (RagsvcError, ValueError) as exc:
        raise fail(exc) from exc


LoadFailure = Callable[[Exception], None]


def run(make_app: Callable[[LoadFailure], FastAPI], sock: socket.socket, *, log_level: str,
        describe: Callable[[Exception], str] = str) -> None:
    """Serve the app that `make_app` builds on the bound socket until stopped. `make_app` gets a callback that
    stops the server, for failures found after startup (the store's background load); the failure is then
    one line, `describe(failure)`, and exit 2. A lifespan that raises is still uvicorn's own exit (its
    traceback, status 3): `bind` and `check_model` find the causes that can be known beforehand."""
    import uvicorn

    from ragsvc import gc_freeze
    from ragsvc.api.http_protocol import protocol_for

    gc_freeze.freeze_after_loads()  # this process is the server: what it loads lives as long as it does
    failures: list[Exception] = []
    server: uvicorn.Server | None = None

    def stop(exc: Exception) -> None:
        failures.append(exc)
        if server is not None:
            server.should_exit = True

    app = make_app(stop)
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, http=protocol_for(app)))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    if failures:
        raise fail(describe(failures[0]))
    if not server.started:
        raise fail("the server did not start; the lines above say why")
