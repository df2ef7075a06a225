"""Prompt steps run as two halves on two threads give the tokens of the same steps run whole.

Both runs share one engine (prefix caching off, so the second run computes every step again): only the
runner's `halves` is taken away between them. The split runs are recorded, so each test also shows that its
steps really were split, including one where a half holds no sampling chunk (a prompt's middle chunk).
"""

from __future__ import annotations

import random

import pytest
import torch

from ragsvc.serving.config import EngineConfig
from ragsvc.serving.engine import LLMEngine
from ragsvc.serving.model_runner import SplitBatch
from ragsvc.serving.sampling_params import SamplingParams


def _generate_both_ways(engine: LLMEngine, prompts: list[list[int]], max_tokens: int):
    """-> (outputs split, outputs whole, the split batches run)."""
    runner = engine.runner
    halves = runner.halves
    assert halves is not None, "the engine must split steps (two torch threads, the C++ setter built)"
    splits: list[SplitBatch] = []
    run_halves = runner._run_halves

    def recording(batch: SplitBatch) -> torch.Tensor:
        splits.append(batch)
        return run_halves(batch)

    runner._run_halves = recording  # type: ignore[method-assign]
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True, logprobs=0)
    split = engine.generate(prompts, params)
    assert engine.block_manager.num_free_blocks == engine.block_manager.num_blocks
    runner.halves = None
    whole = engine.generate(prompts, params)
    runner.halves = halves
    return split, whole, splits


def _engine(model: str, **kw) -> LLMEngine:
    torch.set_num_threads(2)  # the runner splits only with two threads; the autouse fixture restores the setting
    return LLMEngine.from_config(EngineConfig(model=model, enable_prefix_caching=False, **kw))


def test_split_steps_match_whole_steps_on_a_tiny_llama(tiny_llama) -> None:
    folder, _ = tiny_llama
    engine = _engine(str(folder), dtype="float32", block_size=4, num_kv_blocks=512, max_model_len=400,
                     max_num_batched_tokens=500)
    rng = random.Random(0)
    # Step 1: prompt 0 whole and 200 tokens of prompt 1, one per half: prompt 1's half samples nothing yet.
    prompts = [[rng.randrange(512) for _ in range(n)] for n in (300, 300, 100, 150)]
    split, whole, splits = _generate_both_ways(engine, prompts, max_tokens=5)
    assert [o.output_token_ids for o in split] == [o.output_token_ids for o in whole]
    for a, b in zip(split, whole, strict=True):
        got = torch.tensor([t.logprob for t in a.logprobs])
        want = torch.tensor([t.logprob for t in b.logprobs])
        torch.testing.assert_close(got, want, rtol=0, atol=1e-4)
    assert splits, "no step was split"
    assert any(not s.first.sampling_chunks or not s.second.sampling_chunks for s in splits)


@pytest.mark.slow
def test_split_steps_keep_smollm2_bf16_greedy_tokens(smollm2_dir) -> None:
    from ragsvc.serving.config import cpu_has_bf16

    if not cpu_has_bf16():
        pytest.skip("bf16 needs avx512_bf16 here; the fp32 path is covered by the tiny model")
    engine = _engine(str(smollm2_dir), dtype="bfloat16", num_kv_blocks=256)
    varying = _rows_round_by_row_count(engine)
    if varying:
        pytest.skip(f"this CPU's bf16 GEMM rounds a row differently at other row counts ({varying}: AMX's oneDNN "
                    "kernels block by row count), so a half step cannot give a whole step's bits")
    rng = random.Random(1)
    prompts = [[rng.randrange(100, 40000) for _ in range(rng.randint(100, 300))] for _ in range(6)]
    split, whole, splits = _generate_both_ways(engine, prompts, max_tokens=6)
    assert splits
    assert [o.output_token_ids for o in split] == [o.output_token_ids for o in whole]


def _rows_round_by_row_count(engine: LLMEngine) -> str:
    """The first linear of `engine`'s model whose bf16 result for the first 150 of 300 rows differs when called
    on those 150 alone (measured, not assumed from the CPU's name); "" where none does."""
    g = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for name, module in engine.runner.model.named_modules():
            inputs = getattr(module, "in_features", None)
            if inputs is None or "lm_head" in name:
                continue
            x = torch.randn(300, inputs, generator=g).to(torch.bfloat16)
            if not torch.equal(module(x)[:150], module(x[:150])):
                return name
    return ""
