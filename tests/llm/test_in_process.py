"""InProcessGenerator over the real SmolLM2 engine: text, token logprobs, batching, streaming, aborts."""

from __future__ import annotations

import math
import threading

import pytest

from ragsvc.errors import InvalidInput
from ragsvc.llm import Generator

pytestmark = pytest.mark.slow

CHAT = [{"role": "user", "content": "What colour is the sky?"}]


def test_is_a_generator(in_process):
    assert isinstance(in_process, Generator)
    assert in_process.model == "smollm2"


def test_chat_with_logprobs(in_process):
    gen = in_process.generate(CHAT, max_tokens=10, logprobs=True, top_logprobs=3)
    assert gen.text and gen.finish_reason in ("stop", "length")
    assert len(gen.tokens) == gen.usage.completion_tokens <= 10
    assert "".join(t.token for t in gen.tokens) == gen.text or gen.finish_reason == "stop"
    for t in gen.tokens:
        assert t.token_id is not None and len(t.top) == 3
        assert [lp for _, lp in t.top] == sorted((lp for _, lp in t.top), reverse=True)
        assert t.logprob == pytest.approx(t.top[0][1])  # greedy picks a most likely token
        assert math.exp(t.logprob) <= 1.0
    assert gen.usage.prompt_tokens > 5


def test_no_logprobs_unless_asked(in_process):
    assert in_process.generate("Hello", max_tokens=3).tokens == ()


def test_generate_many_matches_one_by_one(in_process):
    prompts = ["The capital of France is", CHAT, "1, 2, 3,"]
    batched = in_process.generate_many(prompts, max_tokens=8)
    single = [in_process.generate(p, max_tokens=8) for p in prompts]
    assert [g.text for g in batched] == [g.text for g in single]


def test_threads_share_the_engine(in_process):
    results: dict[int, str] = {}

    def work(i: int) -> None:
        results[i] = in_process.generate(f"Number {i} is", max_tokens=4).text

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(results) == [0, 1, 2, 3]
    assert results[2] == in_process.generate("Number 2 is", max_tokens=4).text


def test_stream_matches_generate(in_process):
    full = in_process.generate(CHAT, max_tokens=12, logprobs=True)
    chunks = list(in_process.stream(CHAT, max_tokens=12, logprobs=True))
    assert "".join(c.text for c in chunks) == full.text
    assert [t.token_id for c in chunks for t in c.tokens] == [t.token_id for t in full.tokens]
    assert chunks[-1].finish_reason == full.finish_reason
    # cached tokens depend on what ran before on this engine (the stream re-reads the prompt `full` just cached)
    last, whole = chunks[-1].usage, full.usage
    assert (last.prompt_tokens, last.completion_tokens) == (whole.prompt_tokens, whole.completion_tokens)


def test_every_chunk_carries_the_counts_so_far(in_process):
    seen = []
    for chunk in in_process.stream(CHAT, max_tokens=12):
        seen.append(chunk)
        if len(seen) == 3:
            break  # left early, as a caller stopping a looping answer does: no last chunk
    assert [c.usage.completion_tokens for c in seen] == [1, 2, 3]
    assert all(c.usage.prompt_tokens > 5 for c in seen)


def test_leaving_a_stream_frees_its_blocks(in_process, engine):
    stream = in_process.stream("Once upon a time", max_tokens=500, temperature=0.0)
    first = next(stream)
    assert first.text is not None and engine.kv_stats()["num_used_blocks"] > 0
    stream.close()  # aborts the request on the engine
    assert engine.kv_stats()["num_free_blocks"] == engine.kv_stats()["num_blocks"]


def test_seeded_sampling_repeats(in_process):
    a = in_process.generate("My favourite animal is", max_tokens=8, temperature=1.0, seed=7)
    b = in_process.generate("My favourite animal is", max_tokens=8, temperature=1.0, seed=7)
    assert a.text == b.text


def test_bad_input(in_process):
    with pytest.raises(InvalidInput, match="1024"):
        in_process.generate("word " * 1100, max_tokens=4)
    with pytest.raises(InvalidInput, match="temperature"):
        in_process.generate("hi", temperature=-1)
    with pytest.raises(InvalidInput, match="role"):
        in_process.generate([{"content": "no role"}])
    with pytest.raises(InvalidInput, match="empty"):
        in_process.generate([])
