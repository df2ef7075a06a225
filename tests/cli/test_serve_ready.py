"""`ragsvc serve` prints its "ready on" line (with the `curl` lines) only once the server answers: printed
before the model and the indexes had loaded, a line pasted at once met a refused connection, which `curl -s`
does not even print."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import httpx

from tests.api.conftest import free_port


def test_the_ready_line_comes_once_requests_are_answered(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen([sys.executable, "-c", "from ragsvc.cli import main; main()", "serve",
                               "--port", str(port), "--data-dir", str(tmp_path / "data")],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    deadline = threading.Timer(180, server.kill)  # a server that never says it is ready ends the read below
    deadline.start()
    try:
        assert server.stdout is not None
        said = []
        for line in server.stdout:
            said.append(line)
            if line.startswith("ready on "):
                break
        assert said[-1].startswith(f"ready on http://127.0.0.1:{port} "), said
        assert any(line.startswith(f"starting on http://127.0.0.1:{port}: loading the indexes") for line in said)
        assert next(server.stdout).split()[:3] == ["curl", "-s", f"http://127.0.0.1:{port}/v1/collections/sample/search"]
        response = httpx.get(f"http://127.0.0.1:{port}/v1/collections", timeout=30)  # at once: no wait, no retry
        assert response.status_code == 200 and response.json() == []
    finally:
        deadline.cancel()
        server.terminate()
        server.wait(timeout=60)
