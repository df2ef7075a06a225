"""Exactness against HF transformers (fp32, tiny random-weight checkpoints): logits within 1e-3 at every
prefill and decode step, including mixed batches, chunked prefill, prefix reuse and preemption."""

from __future__ import annotations

import pytest
import torch

from ragsvc.serving.config import EngineConfig
from ragsvc.serving.engine import LLMEngine
from ragsvc.serving.sampling_params import SamplingParams

GREEDY = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)


def _engine(folder, **overrides) -> LLMEngine:
    options = dict(model=str(folder), dtype="float32", device="cpu", block_size=4, num_kv_blocks=256)
    options.update(overrides)
    return LLMEngine.from_config(EngineConfig(**options))


def _prompts(lengths: list[int], *, seed: int = 1) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 500, (n,), generator=g).tolist() for n in lengths]


def _run_collecting_logits(engine: LLMEngine, prompts: list[list[int]], max_tokens: int, *, tag: str = "r"):
    """Drive scheduler + runner like LLMEngine.step does, but keep every step's logits per request."""
    params = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)
    ids = [f"{tag}{i}" for i in range(len(prompts))]
    for rid, p in zip(ids, prompts, strict=True):
        engine.add_request(rid, p, params)
    seen: dict[str, list[tuple[list[int], torch.Tensor]]] = {rid: [] for rid in ids}
    cached: dict[str, int] = {}
    while engine.scheduler.has_unfinished():
        sched = engine.scheduler.schedule()
        engine.runner.copy_blocks(sched.copies)
        logits, chunks = engine.runner.execute(sched.chunks)
        engine.scheduler.postprocess(sched)
        for row, chunk in enumerate(chunks):
            seq = chunk.seq
            seen[seq.request_id].append((list(seq.token_ids), logits[row]))
            cached[seq.request_id] = seq.num_cached_tokens
            seq.token_ids.append(int(logits[row].argmax()))
            if seq.num_output_tokens >= max_tokens:
                engine.abort(seq.request_id)
    return seen, cached


def _check_against_hf(hf_model, seen) -> None:
    for steps in seen.values():
        assert steps, "a request produced no logits"
        for context, ours in steps:
            with torch.no_grad():
                ref = hf_model(torch.tensor([context])).logits[0, -1]
            torch.testing.assert_close(ours, ref, atol=1e-3, rtol=0)


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_qwen2"])
def test_logits_match_hf_on_a_mixed_batch(fixture, request) -> None:
    folder, hf_model = request.getfixturevalue(fixture)
    seen, _ = _run_collecting_logits(_engine(folder), _prompts([5, 17, 1, 33]), max_tokens=6)
    _check_against_hf(hf_model, seen)


def test_logits_match_hf_with_chunked_prefill_and_prefix_reuse(tiny_llama) -> None:
    folder, hf_model = tiny_llama
    engine = _engine(folder, max_num_batched_tokens=7)  # prompts of 30+ tokens arrive in chunks of <= 7
    shared = _prompts([24], seed=5)[0]
    first, _ = _run_collecting_logits(engine, [shared + [7, 8, 9]], max_tokens=3)
    second, cached = _run_collecting_logits(engine, [shared + [10, 11, 12, 13, 14]], max_tokens=3, tag="s")
    assert cached["s0"] == 24  # the second prompt reused the first one's 24-token prefix (6 full blocks)
    _check_against_hf(hf_model, first)
    _check_against_hf(hf_model, second)


def test_greedy_tokens_match_hf_generate(tiny_llama) -> None:
    folder, hf_model = tiny_llama
    prompts = _prompts([3, 11, 26, 7, 40])
    ours = _engine(folder).generate(prompts, GREEDY)
    for prompt, out in zip(prompts, ours, strict=True):
        ref = hf_model.generate(
            torch.tensor([prompt]), max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=0
        )
        assert out.output_token_ids == ref[0, len(prompt) :].tolist()
        assert out.finish_reason == "length"


def test_prefix_reuse_and_preemption_give_the_same_tokens(tiny_llama) -> None:
    folder, _ = tiny_llama
    shared = _prompts([20], seed=9)[0]
    prompts = [shared + p for p in _prompts([3, 9, 1, 14, 6, 2], seed=10)]
    params = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
    plain = _engine(folder, enable_prefix_caching=False).generate(prompts, params)
    cached_engine = _engine(folder)
    cached_engine.generate(prompts[:1], params)  # warms the shared prefix
    cached = cached_engine.generate(prompts, params)
    # 24 blocks of 4 tokens cannot hold six sequences of ~45 tokens: preemption must happen, then finish.
    tight_engine = _engine(folder, num_kv_blocks=24, enable_prefix_caching=False)
    tight = tight_engine.generate(prompts, params)
    assert tight_engine.scheduler.num_preemptions > 0
    assert any(o.num_cached_tokens > 0 for o in cached)
    for a, b, c in zip(plain, cached, tight, strict=True):
        assert a.output_token_ids == b.output_token_ids == c.output_token_ids
    assert tight_engine.block_manager.num_free_blocks == 24


def test_bfloat16_path_with_packed_linears_tracks_fp32(tiny_llama) -> None:
    from ragsvc.serving.layers.linear import PackedLinear, can_pack

    folder, hf_model = tiny_llama
    engine = _engine(folder, dtype="bfloat16")
    if can_pack(torch.bfloat16, torch.device("cpu")):
        assert isinstance(engine.runner.model.layers[0].self_attn.qkv_proj, PackedLinear)
    seen, _ = _run_collecting_logits(engine, _prompts([9, 30]), max_tokens=4)
    for steps in seen.values():
        for context, ours in steps:
            with torch.no_grad():
                ref = hf_model(torch.tensor([context])).logits[0, -1]
            assert (ours - ref).abs().max() < 0.05 * ref.abs().max()  # bf16 rounding, not a wrong kernel



def test_chunked_prefill_reads_a_consecutive_context_in_place(tiny_llama) -> None:
    """A prompt's blocks are allocated together, so its later chunks see their context as one slice of the
    cache (no gather); logits must still match HF. The gather path is checked in test_attention_paths.py."""
    folder, hf_model = tiny_llama
    engine = _engine(folder, max_num_batched_tokens=7)
    segments = []
    make = engine.runner._prefill_segment

    def spy(chunk, row):
        seg = make(chunk, row)
        segments.append(seg)
        return seg

    engine.runner._prefill_segment = spy  # type: ignore[method-assign]
    seen, _ = _run_collecting_logits(engine, _prompts([26, 30], seed=7), max_tokens=3)
    assert any(s.first_block is not None for s in segments if s.context_blocks is not None)
    _check_against_hf(hf_model, seen)
