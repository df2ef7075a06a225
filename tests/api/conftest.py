"""A real uvicorn server on 127.0.0.1 (a free port) around create_app, shared by a test module."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from ragsvc.api.http_protocol import protocol_for
from ragsvc.config import ApiSettings, Settings, StoreSettings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raw_exchange(url: str, *parts: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `parts` on one connection, read until the server closes it (or 30 s pass) -> status, headers, body."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        for part in parts:
            sock.sendall(part)
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
            if b"\r\n\r\n" in raw and b"content-length" in raw.lower():
                head, _, body = raw.partition(b"\r\n\r\n")
                length = int(next(line.split(b":")[1] for line in head.lower().split(b"\r\n")
                                  if line.startswith(b"content-length")))
                if len(body) >= length:
                    break
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


class LiveServer:
    def __init__(self, app, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.app = app
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                                     http=protocol_for(app)))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self, *, ready_path: str = "/health", timeout_s: float = 120.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        with httpx.Client(base_url=self.url, timeout=5) as client:
            while time.monotonic() < deadline:  # wait for readiness (model load), not for time to pass
                try:
                    if client.get(ready_path).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        raise RuntimeError(f"server at {self.url} not ready within {timeout_s} s")

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)


@contextmanager
def recorded_aborts(engine: Any) -> Iterator[list[str]]:
    """The request ids the engine is asked to abort while the block runs (the real abort still runs)."""
    aborted: list[str] = []
    real = engine.abort

    def abort(request_id: str) -> None:
        aborted.append(request_id)
        real(request_id)

    engine.abort = abort
    try:
        yield aborted
    finally:
        del engine.abort


def wait_idle(engine: Any, timeout_s: float = 120.0) -> None:
    """Until the engine has nothing to run (a request left to finish would run to its max_tokens first)."""
    deadline = time.monotonic() + timeout_s
    while engine.has_unfinished():
        assert time.monotonic() < deadline, "the engine is still busy"
        time.sleep(0.01)  # polling interval: leave the engine lock to the step thread


def make_settings(data_dir: Path, **api: object) -> Settings:
    return Settings(store=StoreSettings(data_dir=data_dir), api=ApiSettings(**api))


@pytest.fixture(scope="module")
def live_api(tmp_path_factory) -> Iterator[LiveServer]:
    from ragsvc.api.app import create_app

    settings = make_settings(tmp_path_factory.mktemp("api") / "data", max_body_bytes=4 << 20, max_k=500)
    server = LiveServer(create_app(settings), free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture()
def client(live_api: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_api.url, timeout=60) as c:
        yield c


@pytest.fixture()
def dead_model_api(tmp_path: Path) -> Iterator[httpx.Client]:
    """A client of an API whose generator URL has nothing listening: every model call fails upstream."""
    from ragsvc.api.app import create_app
    from ragsvc.config import GeneratorSettings

    dead = f"http://127.0.0.1:{free_port()}/v1"
    settings = make_settings(tmp_path / "data").model_copy(
        update={"generator": GeneratorSettings(url=dead, model="m", timeout_s=5)})
    server = LiveServer(create_app(settings), free_port())
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            yield client
    finally:
        server.stop()
