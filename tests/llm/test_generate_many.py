"""generate_many on every Generator: prompt order, options checked before anything is sent, bounded
concurrency over HTTP (an in-memory transport, no server), and the scripted replies consumed in order.
The real-engine check (batched = one by one) is tests/llm/test_in_process.py::test_generate_many_matches_one_by_one."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from ragsvc.errors import InvalidInput, UpstreamError
from ragsvc.llm import Generator
from ragsvc.llm.openai_client import OpenAIGenerator
from ragsvc.llm.scripted import ScriptedGenerator


class EchoServer:
    """An OpenAI-shaped handler that answers each prompt with itself after a short wait, and records the most
    requests it had in flight at once."""

    def __init__(self, *, delay_s: float = 0.02, fail_on: str | None = None) -> None:
        self.delay_s, self.fail_on = delay_s, fail_on
        self.in_flight = self.max_in_flight = self.requests = 0
        self._lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        prompt = body.get("prompt") or body["messages"][-1]["content"]
        with self._lock:
            self.requests += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            time.sleep(self.delay_s)
            if prompt == self.fail_on:
                return httpx.Response(500, json={"error": {"message": "boom"}})
            if "messages" in body:
                choice = {"message": {"content": f"re: {prompt}"}, "finish_reason": "stop"}
            else:
                choice = {"text": f"re: {prompt}", "finish_reason": "stop"}
            usage = {"prompt_tokens": 1, "completion_tokens": 2}
            return httpx.Response(200, json={"choices": [choice], "usage": usage})
        finally:
            with self._lock:
                self.in_flight -= 1


def test_openai_generate_many_keeps_order_and_bounds_concurrency():
    server = EchoServer()
    with OpenAIGenerator("http://model/v1", model="m", transport=httpx.MockTransport(server)) as gen:
        assert isinstance(gen, Generator)
        prompts = [f"p{i}" for i in range(12)] + [[{"role": "user", "content": "chat"}]]
        out = gen.generate_many(prompts, max_tokens=4, max_concurrency=4)
        assert [g.text for g in out] == [f"re: p{i}" for i in range(12)] + ["re: chat"]
        assert 1 < server.max_in_flight <= 4
        assert gen.generate_many([]) == []


def test_openai_generate_many_checks_everything_before_sending():
    server = EchoServer()
    with OpenAIGenerator("http://model/v1", model="m", transport=httpx.MockTransport(server)) as gen:
        with pytest.raises(InvalidInput, match="max_tokens"):
            gen.generate_many(["a", "b"], max_tokens=0)
        with pytest.raises(InvalidInput, match="role"):
            gen.generate_many(["a", [{"content": "no role"}]])
        with pytest.raises(InvalidInput, match="max_concurrency"):
            gen.generate_many(["a"], max_concurrency=0)
        assert server.requests == 0


def test_openai_generate_many_raises_the_first_failure():
    server = EchoServer(fail_on="bad")
    gen = OpenAIGenerator("http://model/v1", model="m", transport=httpx.MockTransport(server))
    with gen, pytest.raises(UpstreamError, match="boom"):
        gen.generate_many(["a", "bad", "c"], max_concurrency=1)


def test_scripted_generate_many_consumes_the_script_in_prompt_order():
    gen = ScriptedGenerator(["one", "two", "three"])
    assert [g.text for g in gen.generate_many(["a", "b"], logprobs=True)] == ["one", "two"]
    assert [p for p, _ in gen.calls] == ["a", "b"]
    with pytest.raises(InvalidInput, match="top_logprobs"):
        gen.generate_many(["c"], top_logprobs=50)
    assert gen.generate("c").text == "three"  # the failed batch took no reply
