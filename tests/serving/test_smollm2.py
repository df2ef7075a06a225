"""The real packaged SmolLM2-135M-Instruct: greedy tokens identical to HF generate, chat text and stops."""

from __future__ import annotations

import pytest
import torch

from ragsvc.serving.config import EngineConfig
from ragsvc.serving.engine import LLMEngine
from ragsvc.serving.sampling_params import SamplingParams

pytestmark = pytest.mark.slow

QUESTIONS = ["What is the capital of France?", "Write one sentence about the sea.", "List three colours.", "hi"]


@pytest.fixture(scope="module")
def engine(smollm2_dir) -> LLMEngine:
    cache = str(smollm2_dir.parent)
    return LLMEngine.from_config(EngineConfig(model="smollm2", cache_dir=cache, dtype="float32", block_size=16))


def _chat_ids(engine: LLMEngine, question: str) -> list[int]:
    ids = engine.tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=True
    )
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def test_greedy_matches_hf_generate_on_mixed_lengths(engine, smollm2_dir) -> None:
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    prompts = [_chat_ids(engine, q) for q in QUESTIONS]
    assert len({len(p) for p in prompts}) > 1
    ours = engine.generate(prompts, SamplingParams(temperature=0, max_tokens=12))
    for prompt, out in zip(prompts, ours, strict=True):
        with torch.inference_mode():
            ref = hf.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False)
        assert out.output_token_ids == ref[0, len(prompt) :].tolist()


def test_chat_answer_text_and_stop_string(engine) -> None:
    prompt = _chat_ids(engine, QUESTIONS[0])
    [full] = engine.generate([prompt], SamplingParams(temperature=0, max_tokens=20))
    assert "Paris" in full.text and full.finish_reason == "stop"  # ended on <|im_end|>
    [cut] = engine.generate([prompt], SamplingParams(temperature=0, max_tokens=20, stop=("Paris",)))
    assert cut.finish_reason == "stop" and "Paris" not in cut.text
    assert full.text.startswith(cut.text) and cut.text


def test_streamed_deltas_add_up_to_the_text(engine) -> None:
    engine.add_request(
        "s", _chat_ids(engine, QUESTIONS[1]), SamplingParams(temperature=0, max_tokens=24, stop=(" the",))
    )
    deltas, last = [], None
    while engine.has_unfinished():
        for out in engine.step():
            deltas.append(out.new_text)
            last = out
    assert last is not None and last.finished
    assert "".join(deltas) == last.text and " the" not in last.text
