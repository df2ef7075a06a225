"""A quick same-process A/B of batched greedy decoding: ragsvc's engine vs HF transformers' padded
`generate`, same weights, dtype and thread count. Not the serving benchmark (`ragsvc bench serving`):
a check an engine change did not slow decoding down.

    ragsvc llm decode-check --batch 32 --new-tokens 64 --threads 1 [--context-repeats 30]

Reports tokens/s by wall clock and by process CPU time: on a machine shared with other jobs the CPU-time
figure is the steadier one (single-threaded runs only).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from ragsvc.errors import InvalidInput
from ragsvc.serving.config import EngineConfig
from ragsvc.serving.engine import LLMEngine
from ragsvc.serving.loader import resolve_model_dir
from ragsvc.serving.sampling_params import SamplingParams


def _prompts(tokenizer: Any, batch: int, context_repeats: int) -> list[str]:
    # Mixed lengths like real traffic: request i carries (i % 4) / 3 of the background text.
    sentence = "Rayleigh scattering makes short wavelengths scatter more than long ones."
    background = " ".join([sentence] * context_repeats)
    questions = [
        background[: len(background) * (i % 4) // 3] + f" Question {i}: explain briefly why the sky is "
        "blue and how rainbows form."
        for i in range(batch)
    ]
    return [
        tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
        for q in questions
    ]


def _timed(fn: Callable[[], Any]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def run_decode_check(
    *,
    batch: int = 32,
    new_tokens: int = 64,
    threads: int = 1,
    dtype: str = "bfloat16",
    model: str = "smollm2",
    cache_dir: str | None = None,
    rounds: int = 2,
    context_repeats: int = 0,
) -> dict[str, Any]:
    """Time `rounds` rounds of both systems on the same prompts (one warm-up first, not timed); returns the
    JSON-ready result: the settings, the padded prompt length, and per round tok/s (wall and CPU) and ratios."""
    torch.set_num_threads(threads)
    from transformers import AutoModelForCausalLM

    engine = LLMEngine.from_config(EngineConfig(model=model, dtype=dtype, cache_dir=cache_dir))
    tokenizer = engine.tokenizer
    if tokenizer is None:
        raise InvalidInput(f"model {model!r} ships no tokenizer; the decode check needs one to build prompts")
    hf = AutoModelForCausalLM.from_pretrained(
        resolve_model_dir(model, cache_dir=cache_dir), dtype=getattr(torch, dtype)
    ).eval()
    prompts: list[str | list[int]] = list(_prompts(tokenizer, batch, context_repeats))
    tokenizer.padding_side = "left"
    enc = tokenizer(prompts, return_tensors="pt", padding=True)
    params = SamplingParams(temperature=0, max_tokens=new_tokens, ignore_eos=True)

    def ours() -> None:
        engine.generate(prompts, params)

    def theirs() -> None:
        with torch.inference_mode():
            hf.generate(**enc, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                        pad_token_id=tokenizer.pad_token_id)

    engine.generate(prompts[:2], SamplingParams(temperature=0, max_tokens=4))  # warm-up, not timed
    results = []
    for _ in range(rounds):
        (ow, oc), (hw, hc) = _timed(ours), _timed(theirs)
        n = batch * new_tokens
        results.append({"ragsvc_tok_s_wall": n / ow, "hf_tok_s_wall": n / hw, "ragsvc_tok_s_cpu": n / oc,
                        "hf_tok_s_cpu": n / hc, "ratio_wall": hw / ow, "ratio_cpu": hc / oc})
    return {"batch": batch, "new_tokens": new_tokens, "threads": threads, "dtype": dtype,
            "prompt_tokens": int(enc.input_ids.shape[1]), "rounds": results}
