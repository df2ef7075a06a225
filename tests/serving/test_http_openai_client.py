"""The official `openai` Python client, unchanged, against our server: chat, completions, streaming, logprobs,
and its typed errors for our error bodies."""

from __future__ import annotations

import openai
import pytest
import torch

pytestmark = pytest.mark.slow

MODEL = "smollm2"


@pytest.fixture(scope="module")
def oai(smollm2_dir):
    from ragsvc.api.model_app import create_model_app, serve_in_thread
    from ragsvc.serving.config import EngineConfig

    app = create_model_app(EngineConfig(model=MODEL, cache_dir=str(smollm2_dir.parent), num_kv_blocks=128,
                                        num_threads=1))
    # the engine runs on one torch thread (restored after): with other work on the 2 cores, two spinning
    # OpenMP threads made each step ~20x slower; these tests check behaviour, not speed
    threads = torch.get_num_threads()
    with serve_in_thread(app) as url:
        yield openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
    torch.set_num_threads(threads)


def test_models(oai):
    assert [m.id for m in oai.models.list()] == [MODEL]


def test_chat_with_logprobs(oai):
    r = oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "What is 2+2?"}],
                                    max_tokens=8, temperature=0, logprobs=True, top_logprobs=2, seed=1)
    choice = r.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    tokens = choice.logprobs.content
    assert len(tokens) == r.usage.completion_tokens
    assert "".join(t.token for t in tokens) == choice.message.content
    assert all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in tokens)


def test_completions_and_stream_agree(oai):
    kwargs = dict(model=MODEL, prompt="The sky is", max_tokens=10, temperature=0)
    plain = oai.completions.create(**kwargs)
    assert plain.object == "text_completion" and plain.usage.completion_tokens >= 1
    streamed = "".join(c.choices[0].text for c in oai.completions.create(**kwargs, stream=True) if c.choices)
    assert streamed == plain.choices[0].text


def test_chat_stream(oai):
    stream = oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi!"}], max_tokens=8,
                                         temperature=0, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1


def test_typed_errors(oai):
    with pytest.raises(openai.NotFoundError) as err:
        oai.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert "nope" in err.value.message
    with pytest.raises(openai.BadRequestError) as err:
        oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], temperature=-1)
    assert "temperature" in err.value.message
