"""PooledGenerator over two real `ragsvc serve-model` SmolLM2 servers (child processes on 127.0.0.1).

fp32 with one torch thread each, so a prompt's greedy reply is the same on either server and whatever it is
batched with: the tests can say "nothing lost" by comparing texts with one server's answers.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ragsvc.bench.process import stop_process
from ragsvc.bench.server_process import free_port
from ragsvc.errors import InvalidInput, UpstreamError, UpstreamTimeout
from ragsvc.llm.openai_client import OpenAIGenerator
from ragsvc.llm.pool import PooledGenerator, generator_for, parse_urls
from tests.llm.conftest import MODEL_CACHE, NUM_BLOCKS

PROMPTS = [f"Write one sentence about the number {i}." for i in range(12)]
MAX_TOKENS = 6


def _start(data_dir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    args = [sys.executable, "-c", "from ragsvc.cli import main; main()", "serve-model", "--port", str(port),
            "--dtype", "float32", "--threads", "1", "--num-kv-blocks", str(NUM_BLOCKS), "--cache-dir",
            str(MODEL_CACHE), "--data-dir", str(data_dir), "--log-level", "warning"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), \
        f"http://127.0.0.1:{port}"


def _wait_ready(proc: subprocess.Popen, url: str) -> None:
    deadline = time.monotonic() + 300
    with httpx.Client(base_url=url, timeout=5) as client:
        while time.monotonic() < deadline:  # model loading: polled, bounded
            assert proc.poll() is None, f"serve-model at {url} exited with {proc.returncode}"
            try:
                if client.get("/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
    raise AssertionError(f"serve-model at {url} was not ready in 300 s")


def _two_servers(folder: Path) -> Iterator[list[tuple[subprocess.Popen, str]]]:
    started = [_start(folder / f"data-{i}") for i in range(2)]
    try:
        for proc, url in started:
            _wait_ready(proc, url)
        yield started
    finally:
        for proc, _ in started:
            if proc.poll() is None:
                stop_process(proc)


@pytest.fixture(scope="module")
def two_servers(tmp_path_factory):
    """Shared by the tests that leave both servers running (a server start is most of their time)."""
    yield from _two_servers(tmp_path_factory.mktemp("pool"))


@pytest.fixture
def two_servers_to_stop(tmp_path):
    yield from _two_servers(tmp_path)


def _replies(url: str) -> list[str]:
    with OpenAIGenerator(url + "/v1") as one:
        return [g.text for g in one.generate_many(PROMPTS, max_tokens=MAX_TOKENS)]


@pytest.mark.slow
def test_calls_spread_over_both_servers_and_name_the_one_that_served(two_servers):
    expected = _replies(two_servers[0][1])
    urls = [url + "/v1" for _, url in two_servers]
    with PooledGenerator(urls) as pool:
        replies = pool.generate_many(PROMPTS, max_tokens=MAX_TOKENS, max_concurrency=4)
        assert [g.text for g in replies] == expected
        assert {g.server for g in replies} == set(urls)  # least-loaded routing used both
        stats = pool.stats()
        assert sum(s.served for s in stats) == len(PROMPTS)
        assert all(s.healthy and s.failures == 0 and s.in_flight == 0 for s in stats)
        chunks = list(pool.stream(PROMPTS[0], max_tokens=MAX_TOKENS))
        assert "".join(c.text for c in chunks) == expected[0]
        assert {c.server for c in chunks} <= set(urls)


@pytest.mark.slow
def test_a_server_stopped_mid_run_loses_no_call(two_servers_to_stop):
    two_servers = two_servers_to_stop
    (_, url_a), (proc_b, url_b) = two_servers
    expected = _replies(url_a)
    replies: dict[int, object] = {}
    errors: list[BaseException] = []
    third_done = threading.Event()
    with PooledGenerator([url_a + "/v1", url_b + "/v1"], cooldown_s=60) as pool:
        def client(indices: list[int]) -> None:
            for i in indices:
                try:
                    replies[i] = pool.generate(PROMPTS[i], max_tokens=MAX_TOKENS)
                except BaseException as exc:  # noqa: BLE001 - asserted below
                    errors.append(exc)
                if len(replies) >= 3:
                    third_done.set()

        threads = [threading.Thread(target=client, args=(list(range(j, len(PROMPTS), 2)),)) for j in range(2)]
        for t in threads:
            t.start()
        assert third_done.wait(timeout=300)
        proc_b.kill()  # stopped hard, possibly with a request of ours in flight
        for t in threads:
            t.join(timeout=300)
        assert errors == []
        assert [replies[i].text for i in range(len(PROMPTS))] == expected
        stats = {s.url: s for s in pool.stats()}
        assert not stats[url_b + "/v1"].healthy and stats[url_b + "/v1"].failures >= 1
        served_after = [replies[i].server for i in range(len(PROMPTS))][-4:]
        assert set(served_after) == {url_a + "/v1"}  # once down, the stopped server gets no calls
        proc_a = two_servers[0][0]
        proc_a.kill()
        with pytest.raises(UpstreamError, match="no model server in the pool answered"):
            pool.generate(PROMPTS[0], max_tokens=MAX_TOKENS)


@pytest.mark.slow
def test_a_read_timeout_is_not_retried_elsewhere(two_servers):
    urls = [url + "/v1" for _, url in two_servers]
    with PooledGenerator(urls, model="smollm2", timeout_s=0.001) as pool:
        with pytest.raises(UpstreamTimeout):
            pool.generate(PROMPTS[0], max_tokens=MAX_TOKENS)
        stats = pool.stats()
        assert sum(s.failures for s in stats) == 0 and all(s.healthy for s in stats)


@pytest.mark.parametrize("text", ["", " , ", "127.0.0.1:8001/v1", "http://a/v1,http://a/v1",
                                  ",".join(f"http://h{i}/v1" for i in range(65))])
def test_bad_url_lists_are_refused(text):
    with pytest.raises(InvalidInput, match="URL"):
        parse_urls(text)


def test_one_url_is_a_plain_client_and_several_a_pool():
    one = generator_for("http://127.0.0.1:1/v1")
    several = generator_for("http://127.0.0.1:1/v1, http://127.0.0.1:2/v1/")
    try:
        assert isinstance(one, OpenAIGenerator)
        assert isinstance(several, PooledGenerator)
        assert [s.url for s in several.stats()] == ["http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1"]
        with pytest.raises(InvalidInput, match="max_tokens"):  # options checked before any server is tried
            several.generate("hi", max_tokens=0)
    finally:
        one.close()
        several.close()
