"""Prompt-lookup speculation on the real SmolLM2 with answer-style prompts (passages + question): the same greedy
tokens, text and stops as plain decoding, in process and through the model server on a real uvicorn."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from ragsvc.answer.prompt import INSTRUCTIONS
from ragsvc.serving.config import EngineConfig
from ragsvc.serving.engine import LLMEngine
from ragsvc.serving.sampling_params import SamplingParams

pytestmark = pytest.mark.slow

SAMPLE = Path(__file__).resolve().parents[2] / "ragsvc" / "sample"
QUESTIONS = {
    "paged-attention.md": "How does paged attention store the KV cache?",
    "bm25.md": "What does BM25 score?",
    "hnsw.md": "How does HNSW search a graph?",
    "flare.md": "When does FLARE retrieve?",
}


def _messages(name: str, question: str) -> list[dict[str, str]]:
    passage = (SAMPLE / name).read_text()[:1500]
    user = f"{INSTRUCTIONS}Question: {question}\n\nPassages:\n[1] {passage}\n\nQuestion: {question}"
    return [{"role": "user", "content": user}]


def _config(smollm2_dir: Path, *, speculative: bool) -> EngineConfig:
    return EngineConfig(model="smollm2", cache_dir=str(smollm2_dir.parent), dtype="float32", num_threads=1,
                        speculative="prompt-lookup" if speculative else None)


@pytest.fixture(scope="module")
def engines(smollm2_dir) -> tuple[LLMEngine, LLMEngine]:
    return (LLMEngine.from_config(_config(smollm2_dir, speculative=False)),
            LLMEngine.from_config(_config(smollm2_dir, speculative=True)))


def _ids(engine: LLMEngine, messages: list[dict[str, str]]) -> list[int]:
    ids = engine.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def test_answers_are_plain_greedy_and_drafts_are_accepted(engines) -> None:
    plain, spec = engines
    prompts = [_ids(plain, _messages(n, q)) for n, q in QUESTIONS.items()]
    params = SamplingParams(temperature=0, max_tokens=80, logprobs=1)
    ours, theirs = spec.generate(prompts, params), plain.generate(prompts, params)
    for a, b in zip(theirs, ours, strict=True):
        assert b.output_token_ids == a.output_token_ids and b.text == a.text
        # the same logprobs up to the GEMM's summation order, which moves with the rows in a step (a verify step
        # has k + 1 per sequence): rounding both to 3 places split -0.0195 into -0.019 and -0.020 on a Zen 3
        assert [x.logprob for x in b.logprobs] == pytest.approx([x.logprob for x in a.logprobs], abs=1e-3)
    stats = spec.spec_stats.as_dict()
    assert stats["num_accepted_tokens"] > 0 and stats["tokens_per_spec_step"] > 1.0


def test_stop_string_inside_accepted_drafts(engines) -> None:
    """A stop string cut from the middle of the plain answer: both stop on the same token with the same text."""
    plain, spec = engines
    prompt = _ids(plain, _messages("paged-attention.md", QUESTIONS["paged-attention.md"]))
    [full] = plain.generate([prompt], SamplingParams(temperature=0, max_tokens=60))
    words = full.text.split()
    assert len(words) > 8
    stop = " " + words[len(words) // 2]
    params = SamplingParams(temperature=0, max_tokens=60, stop=(stop,))
    [a], [b] = plain.generate([prompt], params), spec.generate([prompt], params)
    assert a.finish_reason == "stop" and stop not in a.text
    assert (b.output_token_ids, b.text, b.finish_reason) == (a.output_token_ids, a.text, a.finish_reason)


def test_model_server_with_speculation_answers_like_plain(smollm2_dir, engines) -> None:
    from ragsvc.api.model_app import create_model_app, serve_in_thread

    plain, _ = engines
    messages = _messages("bm25.md", QUESTIONS["bm25.md"])
    [expected] = plain.generate([_ids(plain, messages)], SamplingParams(temperature=0, max_tokens=48))
    app = create_model_app(_config(smollm2_dir, speculative=True))
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=120) as client:
        body = {"model": "smollm2", "messages": messages, "temperature": 0, "max_tokens": 48}
        reply = client.post("/v1/chat/completions", json=body)
        assert reply.status_code == 200, reply.text
        assert reply.json()["choices"][0]["message"]["content"] == expected.text
        assert app.state.served_model.engine.spec_stats.num_accepted_tokens > 0
