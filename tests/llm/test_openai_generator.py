"""OpenAIGenerator against our real server over HTTP: the same answers as in-process, logprobs from both
endpoints, streaming, server errors as ragsvc errors, and retries when the connection fails."""

from __future__ import annotations

import httpx
import pytest

from ragsvc.errors import InvalidInput, UpstreamError, UpstreamRefused
from ragsvc.llm.openai_client import OpenAIGenerator

pytestmark = pytest.mark.slow

CHAT = [{"role": "user", "content": "Name a fruit."}]


@pytest.fixture(scope="module")
def remote(server_url):
    with OpenAIGenerator(f"{server_url}/v1", max_retries=0) as gen:
        yield gen


def test_model_is_read_from_the_server(remote):
    assert remote.model == "smollm2"


def test_chat_matches_in_process(remote, in_process):
    over_http = remote.generate(CHAT, max_tokens=10, logprobs=True, top_logprobs=2)
    local = in_process.generate(CHAT, max_tokens=10, logprobs=True, top_logprobs=2)
    assert over_http.text == local.text
    assert [t.token for t in over_http.tokens] == [t.token for t in local.tokens]
    assert [t.logprob for t in over_http.tokens] == pytest.approx([t.logprob for t in local.tokens], abs=1e-5)
    assert over_http.usage.prompt_tokens == local.usage.prompt_tokens


def test_completion_logprobs_and_stream(remote):
    gen = remote.generate("The sun rises in the", max_tokens=6, logprobs=True, top_logprobs=2)
    assert len(gen.tokens) == gen.usage.completion_tokens
    assert all(len(t.top) <= 2 and t.logprob <= 0 for t in gen.tokens)
    chunks = list(remote.stream("The sun rises in the", max_tokens=6))
    assert "".join(c.text for c in chunks) == gen.text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == gen.usage.completion_tokens


def test_server_errors_become_ragsvc_errors(remote, server_url):
    with pytest.raises(InvalidInput, match="1024"):
        remote.generate("word " * 1100, max_tokens=4)
    with OpenAIGenerator(f"{server_url}/v1", model="nope") as wrong, pytest.raises(UpstreamRefused, match="nope"):
        wrong.generate("hi", max_tokens=2)


def test_unreachable_server_is_a_bad_gateway_after_retries():
    with (
        socket_closed_port() as port,
        OpenAIGenerator(f"http://127.0.0.1:{port}/v1", model="m", max_retries=2, retry_backoff_s=0.001) as gen,
        pytest.raises(UpstreamError, match="after 3 tries"),
    ):
        gen.generate("hi", max_tokens=2)


class _FlakyConnect(httpx.BaseTransport):
    """The real transport, except that the first `failures` connections are refused."""

    def __init__(self, failures: int) -> None:
        self.failures, self.attempts = failures, 0
        self._real = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise httpx.ConnectError("connection refused", request=request)
        return self._real.handle_request(request)


def test_connect_failures_are_retried(server_url):
    transport = _FlakyConnect(failures=2)
    with OpenAIGenerator(f"{server_url}/v1", model="smollm2", max_retries=3, retry_backoff_s=0.001,
                         transport=transport) as gen:
        assert gen.generate("Hi", max_tokens=2).usage.completion_tokens >= 1
    assert transport.attempts == 3


def socket_closed_port():
    """A port nothing listens on (bound, then closed)."""
    import contextlib
    import socket

    @contextlib.contextmanager
    def closed():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        yield port

    return closed()
