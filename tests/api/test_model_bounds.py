"""The model server's bounds on a real uvicorn over the real SmolLM2: the body limit answers before the body
arrives, tokenising stays off the event loop, non-finite numbers and out-of-range seeds are 4xx, not 500."""

from __future__ import annotations

import json
import select
import socket
import tempfile
import threading
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow

MODEL = "smollm2"
SMOLLM2_CACHE = Path(tempfile.gettempdir()) / "ragsvc-test-models"
HOLD_S = 20.0  # a bound for the broken case to end; the working case never waits for it


@pytest.fixture(scope="module")
def server():
    from ragsvc.api.model_app import create_model_app, serve_in_thread
    from ragsvc.serving.config import EngineConfig
    from ragsvc.serving.loader import resolve_model_dir

    model_dir = resolve_model_dir(MODEL, cache_dir=str(SMOLLM2_CACHE))
    config = EngineConfig(model=MODEL, cache_dir=str(model_dir.parent), num_kv_blocks=64, block_size=16,
                          max_num_seqs=8, num_threads=1)
    with serve_in_thread(create_model_app(config)) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server, timeout=120) as c:
        yield c


def _chat(**extra: object) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, **extra}


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=120)


def _read_response(sock: socket.socket) -> tuple[int, bytes]:
    """(status, body) of one HTTP/1.1 response with a Content-Length."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next(int(v) for k, _, v in (h.partition(":") for h in lines[1:]) if k.lower() == "content-length")
    while len(body) < length:
        body += sock.recv(65536)
    return int(lines[0].split()[1]), body


def _request_head(path: str, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.parametrize(("body", "param"), [
    ('{"temperature": NaN}', "temperature"), ('{"top_p": Infinity}', "top_p"),
    ('{"temperature": 1e999}', "temperature"),
])
def test_non_finite_numbers_are_refused(client, body, param):
    payload = json.dumps(_chat())[:-1] + ", " + body[1:]
    r = client.post("/v1/chat/completions", content=payload, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert param in r.text


@pytest.mark.parametrize(("patch", "param"), [
    ({"seed": 2**70}, "seed"), ({"seed": -(2**64)}, "seed"), ({"n": 17}, "n"), ({"top_logprobs": 21}, "top_logprobs"),
    ({"stop": ["x"] * 17}, "stop"), ({"max_tokens": 2**40}, "max_tokens"),
    ({"messages": [{"role": "user", "content": "hi"}] * 1025}, "messages"),
    ({"messages": [{"role": "user", "content": "x" * 1_000_001}]}, "messages"),
])
def test_out_of_range_fields_are_400s_naming_the_field(client, patch, param):
    r = client.post("/v1/chat/completions", json=_chat(**patch))
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"].startswith(param)


def test_the_largest_seed_samples(client):
    r = client.post("/v1/chat/completions", json=_chat(seed=2**63 - 1, n=2, temperature=1.0))
    assert r.status_code == 200, r.text
    assert len(r.json()["choices"]) == 2


def test_a_50_mb_body_is_refused_before_it_is_sent(server):
    before = _rss_bytes()
    with _connect(server) as sock:
        sock.sendall(_request_head("/v1/chat/completions", {"Content-Length": str(50 << 20)}) + b"{" * 65536)
        status, body = _read_response(sock)  # answered with 50 MB still unsent
    assert status == 413 and b"payload_too_large" in body
    assert _rss_bytes() - before < 64 << 20


def test_a_chunked_body_past_the_limit_is_refused_while_it_streams(server):
    before = _rss_bytes()
    piece = b"x" * (1 << 20)
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    with _connect(server) as sock:
        sock.sendall(_request_head("/v1/chat/completions", {"Transfer-Encoding": "chunked"}))
        sent = 0
        try:
            while sent < 50 and not select.select([sock], [], [], 0)[0]:  # until the server answers
                sock.sendall(chunk)
                sent += 1
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, _ = _read_response(sock)
    assert status == 413 and sent < 50, f"refused after {sent} MiB"
    assert _rss_bytes() - before < 128 << 20


def test_models_answers_while_a_prompt_is_tokenised(server, monkeypatch):
    """The chat prompt's tokenising is held (an event) until /v1/models has answered. Tokenising off the event
    loop, /v1/models answers meanwhile; on the loop, it could not answer until the hold timed out, and the
    chat's answer (a 400 as soon as the prompt is tokenised: it is longer than the context) would come first."""
    from ragsvc.api import openai_convert

    tokenising, models_answered = threading.Event(), threading.Event()
    real = openai_convert.chat_prompt

    def held(*args, **kwargs):
        tokenising.set()
        models_answered.wait(HOLD_S)
        return real(*args, **kwargs)

    monkeypatch.setattr(openai_convert, "chat_prompt", held)
    payload = json.dumps(_chat(messages=[{"role": "user", "content": "word " * 5000}])).encode()
    with _connect(server) as chat, _connect(server) as models:
        chat.sendall(_request_head("/v1/chat/completions", {"Content-Length": str(len(payload))}) + payload)
        assert tokenising.wait(HOLD_S)
        models.sendall(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        status, body = _read_response(models)
        chat_answered = bool(select.select([chat], [], [], 0)[0])
        models_answered.set()
        chat_status, _ = _read_response(chat)
    assert status == 200 and json.loads(body)["data"][0]["id"]
    assert not chat_answered, "/v1/models waited for the chat request's tokenising"
    assert chat_status == 400
