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

from ragsvc.api.openai_limits import OpenAILimits

pytestmark = pytest.mark.slow

MODEL = "smollm2"
SMOLLM2_CACHE = Path(tempfile.gettempdir()) / "ragsvc-test-models"
HOLD_S = 20.0  # a bound for the broken case to end; the working case never waits for it


@pytest.fixture(scope="module")
def model_app():
    from ragsvc.api.model_app import create_model_app, serve_in_thread
    from ragsvc.serving.config import EngineConfig
    from ragsvc.serving.loader import resolve_model_dir

    model_dir = resolve_model_dir(MODEL, cache_dir=str(SMOLLM2_CACHE))
    config = EngineConfig(model=MODEL, cache_dir=str(model_dir.parent), num_kv_blocks=64, block_size=16,
                          max_num_seqs=8, num_threads=1)
    app = create_model_app(config)
    with serve_in_thread(app) as url:
        yield app, url


@pytest.fixture(scope="module")
def server(model_app):
    return model_app[1]


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
    ({"top_p": 0}, "top_p"), ({"temperature": -0.5}, "temperature"),
])
def test_out_of_range_fields_are_400s_naming_the_field(client, patch, param):
    r = client.post("/v1/chat/completions", json=_chat(**patch))
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"].startswith(param)


@pytest.mark.parametrize(("path", "body", "message"), [
    ("/v1/chat/completions", _chat(stop=["x"] * 17), "stop: List should have at most 16 items"),
    ("/v1/completions", {"model": MODEL, "prompt": [5, -1]}, "prompt.1: Input should be greater than or equal to 0"),
    ("/v1/chat/completions", _chat(messages=[{"role": "user", "content": 5}]),
     "messages.0.content: Input should be a valid string or a valid list"),
])
def test_a_field_of_several_forms_is_reported_in_the_form_the_caller_sent(client, path, body, message):
    r = client.post(path, json=body)
    assert r.status_code == 400 and r.json()["error"]["message"].startswith(message), r.text


def test_the_largest_seed_samples(client):
    r = client.post("/v1/chat/completions", json=_chat(seed=2**63 - 1, n=2, temperature=1.0))
    assert r.status_code == 200, r.text
    assert len(r.json()["choices"]) == 2


def _openai_error(r: httpx.Response, status: int, code: str, says: str) -> None:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, r.text  # OpenAI's shape, which its clients parse
    assert error["code"] == code and says in error["message"], r.text
    assert error["type"] == "invalid_request_error"


def test_refusals_made_before_the_routes_come_in_openais_shape(client):
    """The trusted-host check, the body limit and the JSON guard sit in front of every route and know only the
    path; on these routes they answer as the routes do."""
    surrogate = json.dumps(_chat())[:-1] + ', "user": "\\ud800"}'
    _openai_error(client.post("/v1/chat/completions", content=surrogate, headers={"content-type": "application/json"}),
                  400, "invalid_input", "body.user: holds a lone UTF-16 surrogate")
    _openai_error(client.post("/v1/completions", content=json.dumps({"model": MODEL, "prompt": "hi"})),
                  415, "unsupported_media_type", "Content-Type: application/json")
    _openai_error(client.get("/v1/models", headers={"host": "evil.example"}), 400, "untrusted_host", "evil.example")
    _openai_error(client.get(f"/v1/models/{MODEL}", headers={"host": "evil.example"}), 400, "untrusted_host",
                  "evil.example")
    r = client.get("/health", headers={"host": "evil.example"})  # not an OpenAI route: ragsvc's own shape
    assert r.status_code == 400 and r.json()["error"] == "untrusted_host", r.text


def test_a_50_mb_body_is_refused_before_it_is_sent(server):
    before = _rss_bytes()
    with _connect(server) as sock:
        sock.sendall(_request_head("/v1/chat/completions", {"Content-Length": str(50 << 20)}) + b"{" * 65536)
        status, body = _read_response(sock)  # answered with 50 MB still unsent
    assert status == 413 and json.loads(body)["error"]["code"] == "payload_too_large"
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


LOW = OpenAILimits(max_n=2, max_tokens=3, max_prompts=2, max_prompt_tokens=8, max_messages=2, max_text_chars=40,
                   max_logprobs=1, max_stop=1)
"""Lowered bounds (RAGSVC_MODEL_API__*), so that a request at each bound is cheap to run for real."""
TWO = [{"role": "user", "content": "hi"}, {"role": "user", "content": "x" * 40}]


@pytest.fixture
def lowered(model_app, monkeypatch):
    """The server with LOW as its bounds; counts the prompts it tokenises and the sequences it queues."""
    from ragsvc.api import openai_convert

    app, _ = model_app
    served = app.state.served_model
    counts = {"tokenised": 0, "queued": 0}

    def counting(name, fn):
        def wrapped(*args, **kwargs):
            counts[name] += 1
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(app.state, "openai_limits", LOW)
    monkeypatch.setattr(openai_convert, "chat_prompt", counting("tokenised", openai_convert.chat_prompt))
    monkeypatch.setattr(openai_convert, "completion_prompts",
                        counting("tokenised", openai_convert.completion_prompts))
    monkeypatch.setattr(served.async_engine, "generate", counting("queued", served.async_engine.generate))
    return counts


def _completion(**extra: object) -> dict:
    return {"model": MODEL, "prompt": "hi", "max_tokens": 2, **extra}


@pytest.mark.parametrize(("path", "at_bound", "over", "param"), [
    ("chat", {"n": 2}, {"n": 3}, "n"),
    ("chat", {"max_tokens": 3}, {"max_tokens": 4}, "max_tokens"),
    ("chat", {"max_completion_tokens": 3}, {"max_completion_tokens": 4}, "max_completion_tokens"),
    ("chat", {"logprobs": True, "top_logprobs": 1}, {"logprobs": True, "top_logprobs": 2}, "top_logprobs"),
    ("chat", {"stop": ["zz"]}, {"stop": ["zz", "yy"]}, "stop"),
    ("chat", {"messages": TWO}, {"messages": [*TWO, TWO[0]]}, "messages"),
    ("chat", {"messages": [{"role": "user", "content": [{"type": "text", "text": "x" * 40}] * 2}]},
     {"messages": [{"role": "user", "content": [{"type": "text", "text": "x" * 41}]}]}, "messages"),
    ("completions", {"prompt": ["hi", "yo"]}, {"prompt": ["hi", "yo", "ok"]}, "prompt"),
    ("completions", {"prompt": [1] * 8}, {"prompt": [1] * 9}, "prompt"),
    ("completions", {"prompt": "x" * 40}, {"prompt": "x" * 41}, "prompt"),
    ("completions", {"logprobs": 1}, {"logprobs": 2}, "logprobs"),
    ("completions", {"prompt": ["hi", "yo"], "n": 1}, {"prompt": ["hi", "yo"], "n": 2}, "n"),
])
def test_configured_bounds_run_a_request_at_the_bound_and_refuse_one_past_it_before_any_work(
        client, lowered, path, at_bound, over, param):
    make, url = (_chat, "/v1/chat/completions") if path == "chat" else (_completion, "/v1/completions")
    ok = client.post(url, json=make(**at_bound))
    assert ok.status_code == 200, ok.text
    assert lowered["tokenised"] == 1 and lowered["queued"] >= 1
    before = dict(lowered)
    r = client.post(url, json=make(**over))
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and "RAGSVC_MODEL_API__" in error["message"]
    assert lowered == before, "a refused request was tokenised or queued"
