"""Speculative decoding on a tiny random Llama: the same greedy tokens and logprobs as plain decoding, whatever
the drafts, with rejected drafts' blocks freed, under preemption and with the prefix cache."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ragsvc.serving.config import EngineConfig
from ragsvc.serving.engine import LLMEngine
from ragsvc.serving.outputs import RequestOutput
from ragsvc.serving.sampling_params import SamplingParams

GREEDY = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True, logprobs=2)


def _engine(folder, *, speculative: bool, num_kv_blocks: int = 400, k: int = 4) -> LLMEngine:
    return LLMEngine.from_config(EngineConfig(
        model=str(folder), dtype="float32", block_size=4, num_kv_blocks=num_kv_blocks, max_model_len=256,
        speculative="prompt-lookup" if speculative else None, num_speculative_tokens=k,
    ))


@pytest.fixture(scope="module")
def engines(tiny_llama) -> tuple[LLMEngine, LLMEngine]:
    folder, _ = tiny_llama
    return _engine(folder, speculative=False), _engine(folder, speculative=True)


def _prompts(n: int, seed: int) -> list[list[int]]:
    """Prompts that repeat spans of themselves (what prompt lookup feeds on), of mixed lengths."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        span = [rng.randrange(1, 512) for _ in range(rng.randint(3, 12))]
        noise = [rng.randrange(1, 512) for _ in range(rng.randint(0, 20))]
        out.append(noise + span + noise[:3] + span + [rng.randrange(1, 512)])
    return out


def _same(plain: list[RequestOutput], spec: list[RequestOutput]) -> None:
    for a, b in zip(plain, spec, strict=True):
        assert b.output_token_ids == a.output_token_ids
        assert b.finish_reason == a.finish_reason
        assert [lp.token_id for lp in b.logprobs] == b.output_token_ids
        for x, y in zip(a.logprobs, b.logprobs, strict=True):
            assert y.logprob == pytest.approx(x.logprob, abs=1e-4)
            assert [t for t, _, _ in y.top] == [t for t, _, _ in x.top]


def _drain_check(engine: LLMEngine) -> None:
    bm = engine.block_manager
    assert not engine.has_unfinished()
    assert bm.num_free_blocks == bm.num_blocks and all(b.ref_count == 0 for b in bm.blocks)


def test_prompt_lookup_gives_plain_greedy_tokens(engines) -> None:
    plain, spec = engines
    prompts = _prompts(24, seed=1)
    before = spec.spec_stats.num_accepted_tokens
    _same(plain.generate(prompts, GREEDY), spec.generate(prompts, GREEDY))
    assert spec.spec_stats.num_accepted_tokens > before  # drafts were accepted, not only proposed
    _drain_check(spec)


class _Scripted:
    """Proposes what the test says: the true continuation, random ids, or a mix, by request prompt."""

    def __init__(self, truth: dict[tuple[int, ...], list[int]], noise: random.Random, p_right: float) -> None:
        self.truth, self.noise, self.p_right = truth, noise, p_right
        self.num_calls = 0

    def __call__(self, token_ids: Sequence[int], k: int) -> list[int]:
        self.num_calls += 1
        for prompt, out in self.truth.items():
            if tuple(token_ids[: len(prompt)]) == prompt:
                done = len(token_ids) - len(prompt)
                right = out[done : done + k]
                return [t if self.noise.random() < self.p_right else self.noise.randrange(512) for t in right]
        return []


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, 10_000), st.sampled_from([0.0, 0.5, 0.9, 1.0]), st.integers(1, 6), st.integers(1, 23))
def test_any_drafts_give_plain_greedy_tokens(engines, seed, p_right, k, max_tokens) -> None:
    """Right, wrong and partly right drafts (scripted from the plain run), any max_tokens: same tokens."""
    plain, spec = engines
    prompts = _prompts(3, seed=seed)
    params = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True, logprobs=1)
    reference = plain.generate(prompts, params)
    truth = {tuple(p): r.output_token_ids for p, r in zip(prompts, reference, strict=True)}
    scripted = _Scripted(truth, random.Random(seed), p_right)
    spec.scheduler.proposer, spec.scheduler.num_speculative_tokens = scripted, k
    try:
        _same(reference, spec.generate(prompts, params))
    finally:
        spec.scheduler.proposer, spec.scheduler.num_speculative_tokens = spec.config.speculative_config().proposer(), 4
    assert scripted.num_calls > 0 or max_tokens <= 2  # drafts need room for two tokens after the first
    _drain_check(spec)


def test_stop_token_inside_an_accepted_run_ends_there(engines) -> None:
    """Drafts that are all right: a step accepts k + 1 tokens, but a stop token among them ends the output."""
    plain, spec = engines
    [prompt] = _prompts(1, seed=7)
    [free] = plain.generate([prompt], GREEDY)
    stop = free.output_token_ids[6]
    cut = free.output_token_ids.index(stop) + 1
    spec.scheduler.proposer = _Scripted({tuple(prompt): free.output_token_ids}, random.Random(0), 1.0)
    try:
        params = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True, stop_token_ids=(stop,))
        [out] = spec.generate([prompt], params)
    finally:
        spec.scheduler.proposer = spec.config.speculative_config().proposer()
    assert out.output_token_ids == free.output_token_ids[:cut] and out.finish_reason == "stop"
    _drain_check(spec)


def test_sampled_requests_do_not_speculate(engines) -> None:
    _, spec = engines
    before = spec.spec_stats.num_steps
    spec.generate(_prompts(4, seed=3), SamplingParams(temperature=0.8, max_tokens=20, ignore_eos=True, seed=1))
    assert spec.spec_stats.num_steps == before
    _drain_check(spec)


def test_under_preemption_tokens_match_and_blocks_come_back(tiny_llama, engines) -> None:
    """Few KV blocks for many long requests: preemptions happen while drafts hold lookahead blocks."""
    folder, _ = tiny_llama
    plain, _ = engines
    tight = _engine(folder, speculative=True, num_kv_blocks=40, k=6)
    prompts = _prompts(8, seed=11)
    params = SamplingParams(temperature=0, max_tokens=60, ignore_eos=True, logprobs=2)
    _same(plain.generate(prompts, params), tight.generate(prompts, params))
    assert tight.scheduler.num_preemptions > 0 and tight.spec_stats.num_accepted_tokens > 0
    _drain_check(tight)


def test_prefix_cache_holds_only_accepted_kv(tiny_llama, engines) -> None:
    """A follow-up prompt = an earlier prompt + its speculated output reuses the cached blocks of that output:
    its tokens must still equal plain decoding's, so no rejected draft's KV was registered."""
    folder, _ = tiny_llama
    plain, _ = engines
    spec = _engine(folder, speculative=True)
    prompts = _prompts(6, seed=5)
    firsts = spec.generate(prompts, GREEDY)
    follow = [p + f.output_token_ids[:30] for p, f in zip(prompts, firsts, strict=True)]
    seconds = spec.generate(follow, GREEDY)
    assert all(s.num_cached_tokens >= len(p) for s, p in zip(seconds, prompts, strict=True))
    _same(plain.generate(follow, GREEDY), seconds)
    _drain_check(spec)


def test_rejected_drafts_blocks_are_freed_every_step(engines) -> None:
    """Wrong drafts reach into new blocks; after each step a sequence holds just the blocks of its tokens."""
    _, spec = engines
    bm = spec.block_manager
    spec.scheduler.proposer, spec.scheduler.num_speculative_tokens = (lambda ids, k: [0] * k), 9
    try:
        for i, prompt in enumerate(_prompts(4, seed=9)):
            spec.add_request(f"wrong-{i}", prompt, SamplingParams(temperature=0, max_tokens=30, ignore_eos=True))
        rejected_before = spec.spec_stats.num_draft_tokens - spec.spec_stats.num_accepted_tokens
        while spec.has_unfinished():
            spec.step()
            for seq in spec.scheduler.running:
                assert len(seq.block_table) <= seq.num_blocks_needed(bm.block_size)  # none past its tokens
            held = sum(len(s.block_table) for s in spec.scheduler.running)  # no sharing between these prompts
            assert bm.num_free_blocks + held == bm.num_blocks
    finally:
        spec.scheduler.proposer, spec.scheduler.num_speculative_tokens = spec.config.speculative_config().proposer(), 4
    assert spec.spec_stats.num_draft_tokens - spec.spec_stats.num_accepted_tokens > rejected_before + 50
    _drain_check(spec)
