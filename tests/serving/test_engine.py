"""LLMEngine and AsyncLLMEngine behaviour on a tiny random Llama: limits, aborts, stops, streaming."""

from __future__ import annotations

import asyncio

import pytest

from ragsvc.errors import InvalidInput
from ragsvc.serving.async_engine import AsyncLLMEngine
from ragsvc.serving.config import EngineConfig
from ragsvc.serving.engine import LLMEngine
from ragsvc.serving.sampling_params import SamplingParams


@pytest.fixture
def engine(tiny_llama) -> LLMEngine:
    folder, _ = tiny_llama
    return LLMEngine.from_config(
        EngineConfig(model=str(folder), dtype="float32", block_size=4, num_kv_blocks=64, max_model_len=200)
    )


def test_prompt_plus_max_tokens_over_the_context_is_refused(engine) -> None:
    with pytest.raises(InvalidInput, match="200 tokens"):
        engine.add_request("a", [5] * 190, SamplingParams(max_tokens=20))
    assert not engine.has_unfinished()


def test_bad_prompts_are_refused(engine) -> None:
    with pytest.raises(InvalidInput, match="empty"):
        engine.add_request("a", [], SamplingParams())
    with pytest.raises(InvalidInput, match=r"\[0, 512\)"):
        engine.add_request("a", [1, 9999], SamplingParams())
    with pytest.raises(InvalidInput, match="token ids"):
        engine.add_request("a", "text needs a tokenizer", SamplingParams())
    engine.add_request("a", [1, 2], SamplingParams())
    with pytest.raises(InvalidInput, match="already in use"):
        engine.add_request("a", [1, 2], SamplingParams())


def test_max_model_len_is_capped_by_kv_capacity(tiny_llama) -> None:
    folder, _ = tiny_llama
    e = LLMEngine.from_config(EngineConfig(model=str(folder), dtype="float32", block_size=4, num_kv_blocks=10))
    assert e.max_model_len == 40


def test_abort_frees_blocks_at_once(engine) -> None:
    total = engine.block_manager.num_blocks
    engine.add_request("a", list(range(1, 30)), SamplingParams(max_tokens=50, ignore_eos=True))
    engine.add_request("b", list(range(1, 9)), SamplingParams(max_tokens=3, temperature=0, ignore_eos=True))
    engine.step()
    assert engine.kv_stats()["num_free_blocks"] < total
    engine.abort("a")
    assert engine.block_manager.num_free_blocks == total - len(engine.scheduler.running[0].block_table)
    outputs = []
    while engine.has_unfinished():
        outputs += engine.step()
    aborted = [o for o in outputs if o.request_id == "a"]
    assert len(aborted) == 1 and aborted[0].finished and aborted[0].finish_reason == "abort"
    assert [o.finish_reason for o in outputs if o.request_id == "b" and o.finished] == ["length"]
    assert engine.block_manager.num_free_blocks == total


def test_stop_token_ids_and_max_tokens(engine) -> None:
    [free] = engine.generate([[3, 4, 5]], SamplingParams(temperature=0, max_tokens=10, ignore_eos=True))
    stop_at = free.output_token_ids[3]
    first = free.output_token_ids.index(stop_at)
    [stopped] = engine.generate(
        [[3, 4, 5]], SamplingParams(temperature=0, max_tokens=10, ignore_eos=True, stop_token_ids=(stop_at,))
    )
    assert stopped.finish_reason == "stop"
    assert stopped.output_token_ids == free.output_token_ids[: first + 1]
    assert free.finish_reason == "length" and len(free.output_token_ids) == 10


def test_generate_returns_every_logprob(engine) -> None:
    [out] = engine.generate([[3, 4, 5]], SamplingParams(temperature=0, max_tokens=6, logprobs=2, ignore_eos=True))
    assert [lp.token_id for lp in out.logprobs] == out.output_token_ids
    assert all(len(lp.top) == 2 and lp.top[0][2] >= lp.logprob - 1e-6 for lp in out.logprobs)


def test_kv_stats_report_waste_of_partial_blocks(engine) -> None:
    engine.add_request("a", list(range(1, 7)), SamplingParams(max_tokens=20))  # 6 tokens in 2 blocks of 4
    engine.step()
    stats = engine.kv_stats()
    assert stats["block_size"] == 4 and stats["slots_reserved"] == 8
    assert stats["tokens_stored"] == 7  # 6 prompt tokens + the one sampled (its slot is reserved next step)
    assert stats["waste_pct"] == pytest.approx(12.5)


def test_async_stream_and_disconnect_frees_blocks(engine) -> None:
    async def scenario() -> None:
        aengine = AsyncLLMEngine(engine)
        await aengine.start()
        try:
            params = SamplingParams(temperature=0, max_tokens=5, ignore_eos=True)
            outs = [o async for o in aengine.generate("s", [3, 4, 5], params)]
            assert [len(o.output_token_ids) for o in outs] == [1, 2, 3, 4, 5]
            assert outs[-1].finished and not any(o.finished for o in outs[:-1])

            long = SamplingParams(temperature=0, max_tokens=150, ignore_eos=True)
            stream = aengine.generate("d", [3, 4, 5], long)
            async for out in stream:
                if len(out.output_token_ids) == 2:
                    break  # the client goes away mid-stream
            await stream.aclose()
            assert engine.block_manager.num_free_blocks == engine.block_manager.num_blocks
            with pytest.raises(InvalidInput):
                async for _ in aengine.generate("x", [1] * 199, long):
                    pass
        finally:
            await aengine.stop()

    asyncio.run(scenario())


def test_abort_during_the_forward_drops_its_result(engine, monkeypatch) -> None:
    engine.add_request("a", [3, 4, 5, 6], SamplingParams(max_tokens=5, ignore_eos=True))
    engine.add_request("b", [7, 8], SamplingParams(max_tokens=5, ignore_eos=True))
    real_run = engine.runner.logits

    def run_while_a_client_leaves(batch):
        engine.abort("a")  # another thread, mid-forward: the step does not hold the lock here
        return real_run(batch)

    monkeypatch.setattr(engine.runner, "logits", run_while_a_client_leaves)
    outputs = engine.step()
    monkeypatch.setattr(engine.runner, "logits", real_run)
    by_id = {o.request_id: o for o in outputs}
    assert by_id["a"].finish_reason == "abort" and by_id["a"].output_token_ids == []
    assert len(by_id["b"].output_token_ids) == 1
    assert [s.request_id for s in engine.scheduler.running] == ["b"]


def test_a_hundred_requests_on_a_small_cache_all_complete(tiny_llama) -> None:
    folder, _ = tiny_llama
    engine = LLMEngine.from_config(
        EngineConfig(
            model=str(folder),
            dtype="float32",
            block_size=4,
            num_kv_blocks=40,
            max_num_seqs=16,
            max_num_batched_tokens=64,
        )
    )
    prompts = [[1 + i % 50] * (3 + i % 20) for i in range(100)]
    params = [SamplingParams(temperature=0.8, seed=i, max_tokens=4 + i % 9, ignore_eos=True) for i in range(100)]
    outs = engine.generate(prompts, params)
    assert [len(o.output_token_ids) for o in outs] == [p.max_tokens for p in params]
    assert engine.block_manager.num_free_blocks == 40


def test_scheduling_policy_changes_order_not_tokens(tiny_llama, engine) -> None:
    """Shortest-first admission and a small prefill cap reorder and split the work; the tokens stay the same."""
    folder, _ = tiny_llama
    policy = LLMEngine.from_config(EngineConfig(
        model=str(folder), dtype="float32", block_size=4, num_kv_blocks=64, max_model_len=200,
        prefill_order="shortest", max_prefill_tokens=8, max_wait_steps=3,
    ))
    prompts = [[(7 * i + j) % 500 + 1 for j in range(3 + 9 * (i % 4))] for i in range(10)]
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    expected = [o.output_token_ids for o in engine.generate(prompts, params)]
    assert [o.output_token_ids for o in policy.generate(prompts, params)] == expected
    assert policy.block_manager.num_free_blocks == policy.block_manager.num_blocks


def test_bad_policy_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="prefill_order"):
        EngineConfig(prefill_order="newest")
    with pytest.raises(ValueError, match="max_prefill_tokens"):
        EngineConfig(max_prefill_tokens=0)
    with pytest.raises(ValueError, match="speculative method"):
        EngineConfig(speculative="draft-model")


def test_weights_come_from_the_settings(monkeypatch) -> None:
    """RAGSVC_MODEL__WEIGHTS reaches the engine (serve --with-model, serve-model); a flag overrides it."""
    from pydantic import ValidationError

    from ragsvc.config import Settings

    monkeypatch.setenv("RAGSVC_MODEL__WEIGHTS", "q4")
    assert EngineConfig.from_settings(Settings()).weights == "q4"
    assert EngineConfig.from_settings(Settings(), weights="int8").weights == "int8"
    monkeypatch.setenv("RAGSVC_MODEL__WEIGHTS", "q3")
    with pytest.raises(ValidationError, match="weights"):
        Settings()


def test_serve_model_weights_flag_reaches_the_engine_config(tmp_path) -> None:
    """A format the engine does not know is refused with the reason before anything loads (it used to be
    parsed and then dropped, so the model was served in bf16 whatever the flag said)."""
    from typer.testing import CliRunner

    from ragsvc.cli import app

    result = CliRunner().invoke(app, ["serve-model", "--weights", "q3", "--data-dir", str(tmp_path)])
    assert result.exit_code != 0
    assert "weights 'q3' is not supported" in result.output


def test_seeds_that_differ_only_in_high_bits_or_sign_sample_differently(engine) -> None:
    """torch's CPU generator keeps a seed's low 32 bits; the engine folds the rest in, so 5, 2**32 + 5, 2**40 + 5
    and the seeds 2**32 - 5 and -5 (the same low bits) each draw their own tokens, and a seed repeats itself."""
    prompt = [[3, 17, 42, 8]]
    seeds = [5, 2**32 + 5, 2**40 + 5, 2**32 - 5, -5, 2**63 - 1, -(2**63)]

    def draw(seed: int) -> list[int]:
        params = SamplingParams(temperature=5.0, seed=seed, max_tokens=24, ignore_eos=True)  # near-uniform
        return engine.generate(prompt, params)[0].output_token_ids

    drawn = [draw(s) for s in seeds]
    assert len({tuple(d) for d in drawn}) == len(seeds), drawn
    assert draw(2**40 + 5) == drawn[2] and draw(-5) == drawn[4]


def test_seeds_below_two_to_the_32_seed_torch_as_given() -> None:
    """Small seeds keep the samples they always drew; the others land in torch's 32-bit seed range."""
    from ragsvc.serving.sampling_params import SEED_RANGE, generator_seed

    assert [generator_seed(s) for s in (0, 5, 2**32 - 1)] == [0, 5, 2**32 - 1]
    folded = [generator_seed(s) for s in (2**32, 2**32 + 5, -1, -5, *SEED_RANGE)]
    assert all(0 <= f < 2**32 for f in folded) and len(set(folded)) == len(folded)


def test_what_stops_the_engine_from_running_on_a_gpu_is_said_at_start():
    """Checked when the runner is built on CUDA (the GPU test of it is in test_cuda_engine.py): without Triton
    the first decode would fail on an import, and a block size the Triton attention cannot tile would fail to
    compile there."""
    from ragsvc.serving.model_runner import gpu_problem

    assert gpu_problem(16, has_triton=True) is None and gpu_problem(32, has_triton=True) is None
    assert "pip install 'ragsvc[gpu]'" in (gpu_problem(16, has_triton=False) or "")
    for size in (8, 24, 1):
        assert f"block_size {size} cannot run on a GPU" in (gpu_problem(size, has_triton=True) or "")
