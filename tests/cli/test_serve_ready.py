"""`ragsvc serve` prints its "ready on" line (with the `curl` lines) only once the server answers: printed
before the model and the indexes had loaded, a line pasted at once met a refused connection, which `curl -s`
does not even print."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import httpx

from tests.api.conftest import free_port, raw_exchange


def unparseable_request(port: int) -> tuple[int, dict]:
    """A request line with a space in its path, which uvicorn refuses before any app code runs -> its status
    and JSON body."""
    status, headers, body = raw_exchange(f"http://127.0.0.1:{port}",
                                         b"GET /v1/coll ections HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert headers["content-type"] == "application/json", headers
    return status, json.loads(body)


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
        # an empty data folder: the line lists the collections (a search of one it lacks would be a 404)
        assert next(server.stdout).split() == ["curl", "-s", f"http://127.0.0.1:{port}/v1/collections"]
        assert next(server.stdout).strip().startswith("no collections yet: add documents with `ragsvc ingest")
        response = httpx.get(f"http://127.0.0.1:{port}/v1/collections", timeout=30)  # at once: no wait, no retry
        assert response.status_code == 200 and response.json() == []
        status, body = unparseable_request(port)
        assert status == 400 and body["error"] == "bad_request" and "could not be parsed" in body["detail"]
    finally:
        deadline.cancel()
        server.terminate()
        server.wait(timeout=60)


def test_the_curl_lines_name_a_collection_the_server_has_and_send_a_key_when_keys_are_on() -> None:
    from ragsvc.cli.serve import try_lines

    base = "http://127.0.0.1:8000"
    sample = try_lines(base, collections=["docs", "sample"], with_model=True, keys_on=False).splitlines()
    assert sample[1].startswith(f"  curl -s {base}/v1/collections/sample/search ")
    assert "paged attention" in sample[1] and '"collection": "sample"' in sample[2]
    other = try_lines(base, collections=["docs"], with_model=False, keys_on=True).splitlines()
    assert "keys create" in other[1] and len(other) == 3
    assert other[2].startswith(f'  curl -s -H "authorization: Bearer $RAGSVC_KEY" {base}/v1/collections/docs/search')


def test_the_model_server_says_ready_with_a_request_that_works_at_once(tmp_path: Path) -> None:
    from tests.llm.conftest import MODEL_CACHE, NUM_BLOCKS

    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    server = subprocess.Popen([sys.executable, "-c", "from ragsvc.cli import main; main()", "serve-model",
                               "--port", str(port), "--dtype", "float32", "--threads", "1", "--num-kv-blocks",
                               str(NUM_BLOCKS), "--cache-dir", str(MODEL_CACHE), "--data-dir", str(tmp_path),
                               "--log-level", "warning"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    deadline = threading.Timer(300, server.kill)
    deadline.start()
    try:
        assert server.stdout is not None
        said = [next(server.stdout)]
        assert said[0].startswith(f"starting on http://127.0.0.1:{port}/v1: loading ")
        said += [next(server.stdout)]
        assert said[-1].startswith(f"ready on http://127.0.0.1:{port}/v1 "), said
        curl = next(server.stdout).strip()
        url, body = curl.split()[2], curl.split(" -d ", 1)[1].strip("'")
        response = httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=120)
        assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"]
        status, body = unparseable_request(port)
        assert status == 400 and body["error"]["type"] == "invalid_request_error"
        assert body["error"]["code"] == "bad_request"
    finally:
        deadline.cancel()
        server.terminate()
        server.wait(timeout=60)


def test_the_model_servers_curl_line_quotes_for_the_shell_and_sends_a_key_when_keys_are_on() -> None:
    from ragsvc.cli.serve import model_try_lines

    lines = model_try_lines("http://127.0.0.1:8001", model="o'brien", keys_on=True).splitlines()
    assert "keys create" in lines[1]
    assert lines[2].startswith('  curl -s -H "authorization: Bearer $RAGSVC_KEY" http://127.0.0.1:8001/v1/chat/')
    assert """"model": "o'\\''brien\"""" in lines[2]


def test_a_generator_url_beside_a_hosted_model_is_pointed_out(tmp_path: Path) -> None:
    from tests.llm.conftest import MODEL_CACHE

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",  # the suite's de-quantised weights
           "RAGSVC_GENERATOR__URL": "http://127.0.0.1:9/v1", "RAGSVC_MODEL__CACHE_DIR": str(MODEL_CACHE)}
    server = subprocess.Popen([sys.executable, "-c", "from ragsvc.cli import main; main()", "serve", "--with-model",
                               "--port", str(free_port()), "--data-dir", str(tmp_path / "data")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    deadline = threading.Timer(120, server.kill)
    deadline.start()
    try:
        assert server.stderr is not None
        note = next(line for line in server.stderr if line.startswith("note:"))
        assert "RAGSVC_GENERATOR__URL is set, so answers, HyDE and chats use http://127.0.0.1:9/v1" in note
    finally:  # killed: the note comes before the model loads, and nothing here needs a clean shutdown
        deadline.cancel()
        server.kill()
        server.wait(timeout=60)
