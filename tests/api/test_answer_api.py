"""POST /v1/answer and the pipeline options of search over a real uvicorn on 127.0.0.1, hosting the real
SmolLM2 engine in-process (`serve --with-model`), with httpx as the client; streaming included.

Without a model configured, answers, HyDE and the LLM reranker are refused with a 400; a model server that
is down mid-answer is a 502, and the API keeps serving."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import LiveServer, free_port, make_settings, recorded_aborts, wait_idle

SAMPLE = Path(__file__).resolve().parents[2] / "ragsvc" / "sample"
QUESTION = "How does paged attention store the KV cache?"


def _ingest(client: httpx.Client) -> None:
    assert client.post("/v1/collections", json={"name": "docs", "chunk_tokens": 96}).status_code == 201
    docs = [{"id": p.stem, "text": p.read_text()} for p in sorted(SAMPLE.glob("*.md"))]
    assert client.post("/v1/collections/docs/documents", json={"documents": docs}).status_code == 201


@pytest.fixture(scope="module")
def answer_server(tmp_path_factory):
    from ragsvc.api.app import create_app
    from ragsvc.api.model_app import model_extension
    from tests.llm.conftest import engine_config

    settings = make_settings(tmp_path_factory.mktemp("answer") / "data")
    server = LiveServer(create_app(settings, extensions=[model_extension(engine_config())]), free_port())
    server.start(timeout_s=300)
    with httpx.Client(base_url=server.url, timeout=300) as client:
        _ingest(client)
        yield server, client
    server.stop()


@pytest.fixture(scope="module")
def model_api(answer_server):
    return answer_server[1]


@pytest.mark.slow
def test_answer_cites_the_passages_it_was_given(model_api):
    r = model_api.post("/v1/answer", json={"question": QUESTION, "collection": "docs", "mode": "hybrid", "k": 3,
                                           "max_tokens": 48})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["answer"] and body["finish_reason"] in ("stop", "length")
    assert [x["reason"] for x in body["retrievals"]] == ["question"]
    assert body["passages"] and all(p["document_id"] in {q.stem for q in SAMPLE.glob("*.md")}
                                    for p in body["passages"])
    numbers = {p["number"] for p in body["passages"]}
    assert all(c["number"] in numbers for c in body["citations"])
    (gen,) = body["generations"]
    assert gen["prompt_tokens"] > 50 and gen["completion_tokens"] >= 1 and gen["ttft_ms"] > 0
    assert body["usage"]["completion_tokens"] == gen["completion_tokens"]


@pytest.mark.slow
def test_a_short_answer_is_asked_for_the_answer_alone(model_api):
    r = model_api.post("/v1/answer", json={"question": QUESTION, "collection": "docs", "k": 3, "max_tokens": 24,
                                           "style": "short"})
    assert r.status_code == 200, r.text
    body = r.json()
    (gen,) = body["generations"]
    assert body["answer"] and gen["completion_tokens"] <= 24
    full = model_api.post("/v1/answer", json={"question": QUESTION, "collection": "docs", "k": 3, "max_tokens": 24})
    assert full.json()["generations"][0]["prompt_tokens"] != gen["prompt_tokens"]  # another instruction was sent


@pytest.mark.slow
def test_flare_reasoning_with_the_real_engine_stops_each_lookahead_at_its_sentence(model_api):
    # theta 1.0: every sentence is unsure, so each round forms a query from it; 135M may never write the
    # final "So the answer is" sentence, so `final` is only checked to be what the answer text says
    flare = {"theta": 1.0, "max_rounds": 2, "max_tokens": 64, "lookahead_tokens": 48, "stop_at_sentence": True}
    r = model_api.post("/v1/answer", json={"question": QUESTION, "collection": "docs", "k": 2, "flare": flare,
                                           "style": "reasoning"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["answer"] and body["generations"][0]["kind"] == "lookahead"
    assert all(g["completion_tokens"] <= 48 for g in body["generations"])
    assert (body["final"] is None) == ("answer is" not in body["answer"].lower())
    assert all(x["query"] for x in body["retrievals"])


@pytest.mark.slow
def test_flare_answer_records_rounds_and_reuses_the_prompt_prefix(model_api):
    # theta 1.0: every sentence counts as unsure, so each round retrieves and regenerates
    flare = {"theta": 1.0, "beta": 0.3, "max_rounds": 2, "max_tokens": 48, "lookahead_tokens": 24,
             "accept": "always"}
    r = model_api.post("/v1/answer", json={"question": QUESTION, "collection": "docs", "k": 2, "flare": flare})
    assert r.status_code == 200, r.text
    body = r.json()
    kinds = [g["kind"] for g in body["generations"]]
    # a sentence is regenerated only when its retrieval brought passages the prompt did not have yet
    assert kinds[0] == "lookahead" and len(body["retrievals"]) >= 2
    regenerated = {g["round"] for g in body["generations"] if g["kind"] == "regenerate"}
    assert regenerated == {r["round"] for r in body["retrievals"] if r["added"] and r["round"] > 0}
    assert body["retrievals"][1]["reason"] == "low_confidence" and body["retrievals"][1]["query"]
    later = body["generations"][1:]
    assert any(g["cached_tokens"] > 0 for g in later), "later rounds re-read the unchanged prefix from the cache"


@pytest.mark.slow
def test_the_requests_max_tokens_bounds_every_token_flare_generates(model_api):
    # theta 1.0: every sentence is unsure, so each round decodes a look-ahead and, when its retrieval adds
    # passages, a regeneration; up to 8 rounds of 2 x 32 tokens used to be decoded for max_tokens 40
    flare = {"theta": 1.0, "max_rounds": 8, "lookahead_tokens": 32, "accept": "always"}
    r = model_api.post("/v1/answer", json={"question": QUESTION, "collection": "docs", "k": 2, "flare": flare,
                                           "max_tokens": 40})
    assert r.status_code == 200, r.text
    body = r.json()
    generated = sum(g["completion_tokens"] for g in body["generations"])
    assert body["answer"] and generated == body["usage"]["completion_tokens"] <= 40
    assert body["finish_reason"] in ("stop", "length")
    defaults = model_api.post("/v1/answer", json={"question": QUESTION, "collection": "docs", "k": 2,
                                                  "flare": True, "max_tokens": 16})
    assert defaults.status_code == 200 and defaults.json()["usage"]["completion_tokens"] <= 16


@pytest.mark.slow
def test_streamed_answer_sends_events_then_the_answer(model_api):
    events = []
    with model_api.stream("POST", "/v1/answer", json={"question": QUESTION, "collection": "docs", "k": 2,
                                                      "max_tokens": 24, "stream": True}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                kind = line[len("event: "):]
            elif line.startswith("data: "):
                events.append((kind, json.loads(line[len("data: "):])))
    kinds = [k for k, _ in events]
    assert kinds[0] == "retrieval" and kinds[-1] == "answer" and "text" in kinds
    streamed = "".join(d["text"] for k, d in events if k == "text")
    assert streamed.strip() == events[-1][1]["answer"]


@pytest.mark.slow
def test_a_stream_cut_mid_answer_aborts_the_generation_and_is_no_model_failure(answer_server, caplog):
    server, client = answer_server
    engine = server.app.state.served_model.engine
    body = {"question": QUESTION, "collection": "docs", "k": 2, "max_tokens": 400, "stream": True}
    with recorded_aborts(engine) as aborted:
        with client.stream("POST", "/v1/answer", json=body) as r:
            lines = r.iter_lines()  # keep the iterator referenced: a dropped one closes the connection itself
            assert next(line for line in lines if line == "event: text")
        wait_idle(engine)
    assert aborted, "the answer's generation ran on after its client hung up"
    assert engine.kv_stats()["num_used_blocks"] == 0
    assert not [r for r in caplog.records if "failed" in r.getMessage()], "a hang-up was logged as a failure"
    assert client.post("/v1/answer", json={**body, "stream": False, "max_tokens": 8}).status_code == 200


@pytest.mark.slow
def test_a_plain_answer_whose_client_gives_up_stops_generating(answer_server):
    server, _ = answer_server
    engine = server.app.state.served_model.engine
    body = {"question": QUESTION, "collection": "docs", "k": 2, "max_tokens": 400}
    with recorded_aborts(engine) as aborted:
        with (httpx.Client(base_url=server.url, timeout=httpx.Timeout(60, read=1.0)) as impatient,
              pytest.raises(httpx.ReadTimeout)):
            impatient.post("/v1/answer", json=body)  # 400 tokens take much longer than 1 s here
        wait_idle(engine)
    assert aborted, "the engine generated the whole answer for a client that had gone"
    assert engine.kv_stats()["num_used_blocks"] == 0


@pytest.mark.slow
def test_concurrent_answers_all_reach_the_engine_at_once(answer_server, monkeypatch):
    """Each answer holds a thread while the model generates for it. On Python's default executor (cores + 4
    threads) a 2-core server ran 6 at a time, and the engine, which batches 64, saw no more. Every one of 12
    concurrent answers must be generating at once: a barrier inside the generator opens only then."""
    from concurrent.futures import ThreadPoolExecutor

    from ragsvc.llm.in_process import InProcessGenerator

    n = 12
    barrier = threading.Barrier(n, timeout=120)
    real = InProcessGenerator.stream

    def stream(self, *args, **kwargs):
        barrier.wait()  # raises BrokenBarrierError (a 500) unless all n are in here together
        yield from real(self, *args, **kwargs)

    monkeypatch.setattr(InProcessGenerator, "stream", stream)
    server, _ = answer_server
    body = {"question": QUESTION, "collection": "docs", "k": 1, "max_tokens": 8}
    with ThreadPoolExecutor(n) as pool:
        statuses = list(pool.map(lambda _: httpx.post(f"{server.url}/v1/answer", json=body, timeout=300).status_code,
                                 range(n)))
    assert statuses == [200] * n


def test_asking_an_empty_collection_is_refused_not_answered_from_nothing(model_api):
    assert model_api.post("/v1/collections", json={"name": "void"}).status_code == 201
    for stream in (False, True):
        r = model_api.post("/v1/answer", json={"question": QUESTION, "collection": "void", "stream": stream})
        assert r.status_code == 400 and "holds no documents" in r.json()["detail"], r.text


def test_a_filter_no_passage_matches_answers_empty_without_asking_the_model(model_api):
    body = {"question": QUESTION, "collection": "docs", "filter": {"lang": "klingon"}}
    plain = model_api.post("/v1/answer", json=body)
    assert plain.status_code == 200, plain.text
    answer = plain.json()
    assert answer["finish_reason"] == "no_passages" and answer["answer"] == "" and answer["passages"] == []
    assert answer["generations"] == [] and answer["usage"]["completion_tokens"] == 0
    with model_api.stream("POST", "/v1/answer", json={**body, "stream": True}) as r:
        kinds = [line[len("event: "):] for line in r.iter_lines() if line.startswith("event: ")]
    assert kinds == ["retrieval", "answer"]


@pytest.mark.slow
def test_search_modes_and_the_llm_reranker(model_api):
    base = {"query": "paged attention blocks", "k": 3}
    for mode in ("dense", "lexical", "hybrid"):
        r = model_api.post("/v1/collections/docs/search", json={**base, "mode": mode})
        assert r.status_code == 200, r.text
        assert len(r.json()["hits"]) == 3
    hybrid = model_api.post("/v1/collections/docs/search", json={**base, "mode": "hybrid"}).json()
    assert hybrid["stages"] == ["dense", "lexical", "fuse"]
    r = model_api.post("/v1/collections/docs/search", json={**base, "mode": "hybrid", "rerank": "llm",
                                                             "rerank_candidates": 4})
    assert r.status_code == 200, r.text
    assert r.json()["stages"][-1] == "rerank:llm"


@pytest.mark.parametrize("body, status, needle", [
    ({"question": "", "collection": "docs"}, 400, "question"),
    ({"question": "q", "collection": "docs", "mode": "fuzzy"}, 400, "mode"),
    ({"question": "q", "collection": "docs", "flare": {"theta": 1.5}}, 400, "theta"),
    ({"question": "q", "collection": "docs", "flare": {"max_rounds": 0}}, 400, "max_rounds"),
    ({"question": "q", "collection": "docs", "flare": {"accept": "maybe"}}, 400, "accept"),
    ({"question": "q", "collection": "docs", "k": 0}, 400, "k"),
    ({"question": "q", "collection": "docs", "rerank": "magic"}, 400, "rerank"),
    ({"question": "q", "collection": "docs", "style": "essay"}, 400, "style"),
    ({"question": "q", "collection": "nope"}, 404, "nope"),
])
@pytest.mark.slow
def test_bad_answer_requests_say_what_to_send(model_api, body, status, needle):
    r = model_api.post("/v1/answer", json=body)
    assert r.status_code == status, r.text
    assert needle in r.text


def test_without_a_model_answers_hyde_and_llm_rerank_are_refused(client):
    client.post("/v1/collections", json={"name": "nomodel"})
    client.post("/v1/collections/nomodel/documents", json={"documents": [{"text": "Blocks of the KV cache."}]})
    r = client.post("/v1/answer", json={"question": "what?", "collection": "nomodel"})
    assert r.status_code == 400 and "RAGSVC_GENERATOR__URL" in r.json()["detail"]
    r = client.post("/v1/collections/nomodel/search", json={"query": "kv", "hyde": True})
    assert r.status_code == 400 and "hyde needs a language model" in r.json()["detail"]
    r = client.post("/v1/collections/nomodel/search", json={"query": "kv", "rerank": "llm"})
    assert r.status_code == 400 and "not available" in r.json()["detail"]
    r = client.post("/v1/collections/nomodel/search", json={"vector": [0.0] * 384, "mode": "lexical"})
    assert r.status_code == 400 and "send `query`" in r.json()["detail"]
    assert client.post("/v1/collections/nomodel/search", json={"query": "kv", "mode": "lexical"}).status_code == 200


def test_a_model_server_that_is_down_is_a_bad_gateway(dead_model_api):
    client = dead_model_api
    client.post("/v1/collections", json={"name": "c"})
    client.post("/v1/collections/c/documents", json={"documents": [{"text": "Blocks of the KV cache."}]})
    r = client.post("/v1/answer", json={"question": "what?", "collection": "c", "flare": True})
    assert r.status_code == 502, r.text
    assert "model" in r.json()["detail"]
    assert client.post("/v1/collections/c/search", json={"query": "kv"}).status_code == 200


def test_a_streamed_answer_whose_model_server_is_down_ends_with_an_error_event_carrying_the_request_id(
        dead_model_api):
    client = dead_model_api
    client.post("/v1/collections", json={"name": "c"})
    client.post("/v1/collections/c/documents", json={"documents": [{"text": "Blocks of the KV cache."}]})
    with client.stream("POST", "/v1/answer", json={"question": "what?", "collection": "c", "stream": True},
                       headers={"X-Request-ID": "trace-stream-1"}) as r:
        assert r.status_code == 200 and r.headers["x-request-id"] == "trace-stream-1"
        events = _events(r)
    kind, data = events[-1]
    assert kind == "error" and data["status"] == 502 and data["request_id"] == "trace-stream-1", events


def test_an_unexpected_failure_in_a_stream_is_logged_under_the_request_id_and_not_leaked(caplog):
    import asyncio

    from ragsvc.api.request_id import current_request_id
    from ragsvc.api.sse import events_from_thread

    class Cancelled(Exception):
        pass

    def work(emit):
        emit("text", {"text": "so far"})
        raise RuntimeError("a bug with a secret path")

    async def run() -> list[str]:
        current_request_id.set("rid-42")
        return [line async for line in events_from_thread(work, cancelled=Cancelled)]

    lines = asyncio.run(run())
    assert lines[0].startswith("event: text")
    error = json.loads(lines[-1].split("data: ", 1)[1])
    assert error["error"] == "internal_error" and error["status"] == 500 and error["request_id"] == "rid-42"
    assert "secret" not in error["detail"] and "rid-42" in error["detail"]
    assert any("rid-42" in rec.getMessage() for rec in caplog.records)


def _events(response: httpx.Response) -> list[tuple[str | None, dict]]:
    events, kind = [], None
    for line in response.iter_lines():
        if line.startswith("event: "):
            kind = line[len("event: "):]
        elif line.startswith("data: "):
            events.append((kind, json.loads(line[len("data: "):])))
    return events
