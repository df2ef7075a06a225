"""The real Qwen2.5-Coder-1.5B-Instruct GGUF through `EngineConfig(model="<file>.gguf")`: greedy tokens
identical to HF transformers (fp32, same de-quantised weights), its own chat template, stops at <|im_end|>.

Runs only where RAGSVC_QWEN_GGUF names the file (assemble it with assemble_qwen_coder.sh; CI has none). The
first run converts the GGUF into the test-model cache (~70 s on a quiet 2-core machine, 7 GB of fp32
safetensors). Our engine and HF's model are held one after the other (7 GB each in fp32), not together.
"""

from __future__ import annotations

import gc
import os
from pathlib import Path

import pytest
import torch

from ragsvc.serving.config import EngineConfig
from ragsvc.serving.engine import LLMEngine
from ragsvc.serving.loader import resolve_model_dir
from ragsvc.serving.sampling_params import SamplingParams
from tests.serving.conftest import SMOLLM2_CACHE

pytestmark = pytest.mark.slow

GGUF = os.environ.get("RAGSVC_QWEN_GGUF", "")
QUESTIONS = [
    "Write a Python function that reverses a string.",
    "What does `git rebase` do? Answer in one sentence.",
    "Reply with the single word: yes",
]
MAX_TOKENS = 32


@pytest.fixture(scope="module")
def gguf() -> Path:
    if not GGUF or not Path(GGUF).is_file():
        pytest.skip("set RAGSVC_QWEN_GGUF to qwen2.5-coder-1.5b-instruct-q4_k_m.gguf to run")
    return Path(GGUF)


def _engine(gguf: Path) -> LLMEngine:
    config = EngineConfig(
        model=str(gguf), cache_dir=str(SMOLLM2_CACHE), dtype="float32", device="cpu", num_kv_blocks=64
    )
    return LLMEngine.from_config(config)


def _chat_ids(engine: LLMEngine, question: str) -> list[int]:
    assert engine.tokenizer is not None
    text = engine.tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
    )
    return list(engine.tokenizer(text, add_special_tokens=False)["input_ids"])


def test_greedy_tokens_match_hf_and_chat_stops_at_im_end(gguf: Path) -> None:
    from gguf import GGUFReader
    from transformers import AutoModelForCausalLM

    engine = _engine(gguf)
    tokenizer = engine.tokenizer
    assert tokenizer is not None
    assert tokenizer.chat_template == GGUFReader(gguf).fields["tokenizer.chat_template"].contents()
    ends = {tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")}
    assert engine.eos_ids == ends  # the GGUF names <|im_end|> only; <|endoftext|> must stop generation too
    prompts = [_chat_ids(engine, q) for q in QUESTIONS]
    assert tokenizer.decode(prompts[0][:3]) == "<|im_start|>system\n"  # Qwen's template adds its system turn
    ours = engine.generate(prompts, SamplingParams(temperature=0, max_tokens=MAX_TOKENS))
    del engine
    gc.collect()

    short = ours[2]
    assert short.finish_reason == "stop" and short.output_token_ids[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert short.text.strip().lower().rstrip(".") == "yes"
    assert "def " in ours[0].text

    model_dir = resolve_model_dir(str(gguf), cache_dir=str(SMOLLM2_CACHE))  # the engine's cache, already built
    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    for prompt, out in zip(prompts, ours, strict=True):
        with torch.inference_mode():
            ref = hf.generate(
                torch.tensor([prompt]), max_new_tokens=MAX_TOKENS, do_sample=False, eos_token_id=sorted(ends)
            )
        assert out.output_token_ids == ref[0, len(prompt) :].tolist(), tokenizer.decode(ref[0, len(prompt) :])
