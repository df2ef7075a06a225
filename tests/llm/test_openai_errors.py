"""OpenAIGenerator's errors, over an in-memory transport: each way a model server fails becomes the ragsvc error
a gateway answers with (4xx refusals, 503 not ready, 502 bad gateway, 504 timeout), on both the plain and the
streaming path. The same client against our real server is tests/llm/test_openai_generator.py (slow)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from ragsvc.errors import InvalidInput, NotReady, RagsvcError, UpstreamError, UpstreamRefused, UpstreamTimeout
from ragsvc.llm.openai_client import OpenAIGenerator

Handler = Callable[[httpx.Request], httpx.Response]


def _generator(handler: Handler, *, max_retries: int = 3) -> OpenAIGenerator:
    return OpenAIGenerator("http://model/v1", model="m", transport=httpx.MockTransport(handler),
                           max_retries=max_retries, retry_backoff_s=0.0)


def _status(code: int) -> Handler:
    return lambda request: httpx.Response(code, json={"error": {"message": f"status {code} from the server"}})


@pytest.mark.parametrize("code, error", [(400, InvalidInput), (401, UpstreamRefused), (403, UpstreamRefused),
                                         (404, UpstreamRefused), (422, InvalidInput),
                                         (500, UpstreamError), (502, UpstreamError), (503, NotReady),
                                         (504, UpstreamTimeout)])
def test_http_statuses_map_to_the_gateway_errors(code: int, error: type[RagsvcError]) -> None:
    with _generator(_status(code)) as gen:
        with pytest.raises(error, match=f"status {code} from the server") as plain:
            gen.generate("hi", max_tokens=2)
        with pytest.raises(error, match=f"status {code} from the server") as streamed:
            list(gen.stream("hi", max_tokens=2))
    assert type(plain.value) is error and type(streamed.value) is error


@pytest.mark.parametrize("code, setting", [(401, "RAGSVC_GENERATOR__API_KEY"), (404, "RAGSVC_GENERATOR__MODEL")])
def test_a_refused_key_or_model_is_a_bad_gateway_naming_the_setting(code: int, setting: str) -> None:
    # the server refused ragsvc's own settings: a 502 for the user, and the operator is told what to change
    with _generator(_status(code)) as gen, pytest.raises(UpstreamRefused) as refused:
        gen.generate("hi", max_tokens=2)
    assert refused.value.status_code == 502 and setting in refused.value.message
    assert code != 404 or "'m'" in refused.value.message  # the model name it was sent


def test_a_read_timeout_is_an_upstream_timeout() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with _generator(slow) as gen:
        with pytest.raises(UpstreamTimeout, match="read timeout"):
            gen.generate("hi", max_tokens=2)
        with pytest.raises(UpstreamTimeout, match="read timeout"):
            list(gen.stream("hi", max_tokens=2))


def test_no_connection_after_the_retries_is_a_bad_gateway() -> None:
    attempts = 0

    def refused(request: httpx.Request) -> httpx.Response:
        nonlocal attempts
        attempts += 1
        raise httpx.ConnectError("connection refused", request=request)

    with _generator(refused, max_retries=2) as gen, pytest.raises(UpstreamError, match="after 3 tries"):
        gen.generate("hi", max_tokens=2)
    assert attempts == 3


class _Events(httpx.SyncByteStream):
    """Server-sent events, then `failure` raised where the next line would be read."""

    def __init__(self, events: list[dict[str, object]], failure: Exception | None = None) -> None:
        self.events, self.failure = events, failure

    def __iter__(self) -> Iterator[bytes]:
        for event in self.events:
            yield f"data: {json.dumps(event)}\n\n".encode()
        if self.failure is not None:
            raise self.failure
        yield b"data: [DONE]\n\n"


_FIRST: dict[str, object] = {"choices": [{"text": "Hello", "finish_reason": None}]}


def test_an_error_event_mid_stream_is_a_bad_gateway() -> None:
    events: list[dict[str, object]] = [_FIRST, {"error": {"message": "the engine died"}}]
    with _generator(lambda request: httpx.Response(200, stream=_Events(events))) as gen:
        chunks = gen.stream("hi", max_tokens=4)
        assert next(chunks).text == "Hello"
        with pytest.raises(UpstreamError, match="mid-stream: the engine died"):
            next(chunks)


@pytest.mark.parametrize("failure, error", [(httpx.ReadTimeout("timed out"), UpstreamTimeout),
                                            (httpx.RemoteProtocolError("peer closed"), UpstreamError)])
def test_a_stream_that_stops_mid_answer_is_an_upstream_error(failure: Exception, error: type[RagsvcError]) -> None:
    with _generator(lambda request: httpx.Response(200, stream=_Events([_FIRST], failure))) as gen:
        chunks = gen.stream("hi", max_tokens=4)
        assert next(chunks).text == "Hello"
        with pytest.raises(error):
            next(chunks)


@pytest.mark.parametrize("url", ["notaurl", "127.0.0.1:8001/v1", "ftp://host/v1", "http://", "http://[::1"])
def test_a_base_url_that_is_not_http_is_refused_before_any_request(url: str) -> None:
    with pytest.raises(InvalidInput, match="URL"):
        OpenAIGenerator(url)


@pytest.mark.parametrize("kwargs, match", [({"temperature": float("nan")}, "finite"), ({"seed": 1 << 70}, "seed"),
                                           ({"seed": -(1 << 63) - 1}, "seed")])
def test_options_every_generator_takes_are_checked(kwargs: dict[str, Any], match: str) -> None:
    from ragsvc.llm.generator import options

    with pytest.raises(InvalidInput, match=match):
        options(**kwargs)
