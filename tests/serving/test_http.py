"""The OpenAI-compatible HTTP API on a real uvicorn (127.0.0.1, free port) over the real SmolLM2 engine.

One server per module. Its KV cache is small on purpose (64 blocks x 16 tokens = 1,024 tokens, which is also
max_model_len), so 100 concurrent requests cannot all hold their blocks at once and the scheduler has to
queue and preempt.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
import torch

pytestmark = pytest.mark.slow

NUM_BLOCKS = 64
MODEL = "smollm2"


@pytest.fixture(scope="module")
def server(smollm2_dir):
    from ragsvc.api.model_app import create_model_app, serve_in_thread
    from ragsvc.serving.config import EngineConfig

    config = EngineConfig(model=MODEL, cache_dir=str(smollm2_dir.parent), num_kv_blocks=NUM_BLOCKS,
                          block_size=16, max_num_seqs=32, num_threads=1)
    app = create_model_app(config)
    # the engine runs on one torch thread (restored after): with other work on the 2 cores, two spinning
    # OpenMP threads made each step ~20x slower; these tests check behaviour, not speed
    threads = torch.get_num_threads()
    with serve_in_thread(app) as url:
        yield url, app.state.served_model
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server[0], timeout=120) as c:
        yield c


def _chat(content: str, **extra: object) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], **extra}


def _wait_all_free(served, timeout_s: float = 10.0) -> dict:
    """Poll until every KV block is free (returns the stats) or fail; polls a condition, not a sleep."""
    deadline = time.monotonic() + timeout_s
    stats = served.engine.kv_stats()
    while stats["num_free_blocks"] != stats["num_blocks"] and time.monotonic() < deadline:
        time.sleep(0.01)
        stats = served.engine.kv_stats()
    return stats


def test_models_lists_the_served_model(client):
    body = client.get("/v1/models").json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == [MODEL]
    assert body["data"][0]["max_model_len"] == NUM_BLOCKS * 16


def test_chat_greedy_is_deterministic_and_counts_usage(client, server):
    served = server[1]
    # A first call caches the prompt's full blocks; the two calls compared below then run the very same
    # computation. A cold call and a warm one push different row counts through the GEMMs (34 prompt rows vs
    # 2), and oneDNN's bf16 GEMMs are not row-count invariant (checked: 576x960 at M=34 vs M=2 differ in the
    # last bit), so their logits differ by rounding (~0.3 here) and a near-tie can flip.
    client.post("/v1/chat/completions", json=_chat("Name three colours.", temperature=0, max_tokens=12))
    r1 = client.post("/v1/chat/completions", json=_chat("Name three colours.", temperature=0, max_tokens=12))
    r2 = client.post("/v1/chat/completions", json=_chat("Name three colours.", temperature=0, max_tokens=12))
    assert r1.status_code == 200, r1.text
    a, b = r1.json(), r2.json()
    assert a["object"] == "chat.completion" and a["id"].startswith("chatcmpl-")
    assert a["choices"][0]["message"]["role"] == "assistant"
    assert a["choices"][0]["message"]["content"] == b["choices"][0]["message"]["content"] != ""
    text = served.tokenizer.apply_chat_template([{"role": "user", "content": "Name three colours."}],
                                                tokenize=False, add_generation_prompt=True)
    prompt_len = len(served.tokenizer(text, add_special_tokens=False)["input_ids"])
    usage = a["usage"]
    assert usage["prompt_tokens"] == prompt_len
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    finish = a["choices"][0]["finish_reason"]
    n = usage["completion_tokens"]
    assert (finish == "length" and n == 12) or (finish == "stop" and n <= 12)


def test_chat_logprobs_in_openai_shape(client):
    r = client.post("/v1/chat/completions", json=_chat("Say hello.", temperature=0, max_tokens=6, logprobs=True,
                                                       top_logprobs=3, ignore_eos=True))
    choice = r.json()["choices"][0]
    content = choice["logprobs"]["content"]
    assert len(content) == r.json()["usage"]["completion_tokens"] == 6
    assert "".join(t["token"] for t in content) == choice["message"]["content"]
    for t in content:
        tops = t["top_logprobs"]
        assert len(tops) == 3
        assert [x["logprob"] for x in tops] == sorted((x["logprob"] for x in tops), reverse=True)
        # greedy: the chosen token is a most likely one (bf16 logits can tie, so compare probabilities)
        assert t["logprob"] == pytest.approx(tops[0]["logprob"])
        assert t["logprob"] <= 0 and t["bytes"] == list(t["token"].encode())


def test_completion_logprobs_legacy_shape(client):
    r = client.post("/v1/completions", json={"model": MODEL, "prompt": "The capital of France is", "max_tokens": 5,
                                             "temperature": 0, "logprobs": 2, "ignore_eos": True})
    body = r.json()
    assert body["object"] == "text_completion"
    lp = body["choices"][0]["logprobs"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == 5
    assert "".join(lp["tokens"]) == body["choices"][0]["text"]
    assert all(len(d) <= 2 and max(d.values()) <= 0 for d in lp["top_logprobs"])
    assert lp["text_offset"] == sorted(lp["text_offset"]) and lp["text_offset"][0] == 0


def test_n_choices_seeded_sampling_and_usage(client):
    req = _chat("Write a word.", temperature=1.0, seed=123, n=2, max_tokens=8)
    client.post("/v1/chat/completions", json=req)  # warms the prefix cache: a and b then compute alike
    a = client.post("/v1/chat/completions", json=req).json()
    b = client.post("/v1/chat/completions", json=req).json()
    assert [c["index"] for c in a["choices"]] == [0, 1]
    assert [c["message"]["content"] for c in a["choices"]] == [c["message"]["content"] for c in b["choices"]]
    single = client.post("/v1/chat/completions", json=_chat("Write a word.", max_tokens=1)).json()
    assert a["usage"]["prompt_tokens"] == single["usage"]["prompt_tokens"]  # counted once, not per choice


def test_stop_string_truncates(client):
    base = {"model": MODEL, "prompt": "1, 2, 3, 4, 5,", "max_tokens": 12, "temperature": 0, "ignore_eos": True}
    full = client.post("/v1/completions", json=base).json()["choices"][0]["text"]
    stop = full.strip()[2:5]  # a piece from the middle of what it writes
    assert stop and stop in full
    cut = client.post("/v1/completions", json={**base, "stop": [stop]}).json()["choices"][0]
    assert cut["finish_reason"] == "stop"
    assert cut["text"] == full[: full.index(stop)]


def test_stream_concatenates_to_the_plain_answer(client):
    req = _chat("Count to five.", temperature=0, max_tokens=16)
    plain = client.post("/v1/chat/completions", json=req).json()["choices"][0]["message"]["content"]
    events = []
    with client.stream("POST", "/v1/chat/completions",
                       json={**req, "stream": True, "stream_options": {"include_usage": True}}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == plain
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    assert [c for c in chunks if c["choices"]][-1]["choices"][0]["finish_reason"] in ("stop", "length")


@pytest.mark.parametrize(("patch", "status", "param"), [
    ({"max_tokens": 0}, 400, "max_tokens"),
    ({"temperature": -0.5}, 400, None),
    ({"top_p": 0.0}, 400, None),
    ({"top_p": 1.5}, 400, None),
    ({"model": "gpt-9"}, 404, "model"),
    ({"messages": []}, 400, "messages"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, 400, "tools"),
])
def test_bad_input_gets_openai_error_shape(client, patch, status, param):
    r = client.post("/v1/chat/completions", json={**_chat("hi", max_tokens=4), **patch})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if param is not None:
        assert err["param"] == param


def test_prompt_longer_than_context_names_the_limit(client, server):
    long_prompt = list(range(100, 100 + NUM_BLOCKS * 16 + 10))  # token ids: more than max_model_len
    r = client.post("/v1/completions", json={"model": MODEL, "prompt": long_prompt, "max_tokens": 4})
    assert r.status_code == 400
    assert str(NUM_BLOCKS * 16) in r.json()["error"]["message"]
    r = client.post("/v1/completions", json={"model": MODEL, "prompt": "hi", "max_tokens": NUM_BLOCKS * 16})
    assert r.status_code == 400 and "max_tokens" in r.json()["error"]["message"]
    assert _wait_all_free(server[1])["num_free_blocks"] == NUM_BLOCKS  # nothing was taken


def test_client_disconnect_mid_stream_frees_blocks(client, server):
    served = server[1]
    req = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 900, "ignore_eos": True, "stream": True}
    with client.stream("POST", "/v1/completions", json=req) as r:
        # keep the line iterator referenced: a dropped httpx iterator closes the connection by itself
        lines = r.iter_lines()
        assert next(line for line in lines if line.startswith("data: "))  # the request runs, holds blocks
        used_at_close = served.engine.kv_stats()["num_used_blocks"]
        assert used_at_close > 0
    # Watch the blocks until all are free: had the request run on to its 900 tokens, it would have grown to
    # 57 blocks; freed at once, it never grows by more than a block or two after the close.
    most_used = used_at_close
    stats = served.engine.kv_stats()
    deadline = time.monotonic() + 30
    while stats["num_free_blocks"] != NUM_BLOCKS and time.monotonic() < deadline:
        most_used = max(most_used, stats["num_used_blocks"])
        time.sleep(0.005)  # polling interval: leave the engine lock to the step thread
        stats = served.engine.kv_stats()
    assert stats["num_free_blocks"] == NUM_BLOCKS, stats
    assert most_used <= used_at_close + 2


def test_client_that_gives_up_on_a_plain_request_frees_blocks(server):
    url, served = server
    req = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 900, "ignore_eos": True}
    with (
        httpx.Client(base_url=url, timeout=httpx.Timeout(60, read=1.0)) as impatient,
        pytest.raises(httpx.ReadTimeout),
    ):
        impatient.post("/v1/completions", json=req)  # 900 tokens take much longer than 1 s here
    stats = _wait_all_free(served)
    assert stats["num_free_blocks"] == NUM_BLOCKS, stats


def test_hundred_concurrent_requests_all_complete(server):
    url, served = server

    async def main() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as c:
            reqs = [c.post("/v1/chat/completions", json=_chat(f"Say the number {i}.", max_tokens=6, ignore_eos=True))
                    for i in range(100)]
            return await asyncio.gather(*reqs)

    responses = asyncio.run(main())
    assert [r.status_code for r in responses] == [200] * 100
    assert all(r.json()["usage"]["completion_tokens"] == 6 for r in responses)
    assert _wait_all_free(served)["num_free_blocks"] == NUM_BLOCKS
