"""Decode steps through the CUDA graphs' fixed buffers (serving/decode_graphs.py), on the CPU.

A CUDA graph cannot be captured here (no GPU); mode "eager" runs every step the graphs would replay through
the same buffers, padding rows and scratch block, calling the model instead of replaying a capture. What only a
GPU can check (the capture itself) is in tests/serving/test_cuda_engine.py, marked gpu.
"""

from __future__ import annotations

import pytest
import torch

from ragsvc.serving.config import EngineConfig, resolve_graph_mode
from ragsvc.serving.decode_graphs import DecodeGraphs, graph_sizes, size_for
from ragsvc.serving.engine import LLMEngine
from ragsvc.serving.sampling_params import SamplingParams
from tests.serving.test_model_exact import _prompts, _run_collecting_logits


def _engine(folder, **overrides) -> LLMEngine:
    options = dict(model=str(folder), dtype="float32", device="cpu", num_kv_blocks=64, max_num_seqs=16)
    options.update(overrides)
    return LLMEngine.from_config(EngineConfig(**options))


def test_sizes_cover_every_batch_up_to_the_most_sequences() -> None:
    assert graph_sizes(64) == [1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64]
    assert graph_sizes(5) == [1, 2, 4, 5]
    assert graph_sizes(1) == [1]
    for most in (1, 3, 8, 13, 64):
        sizes = graph_sizes(most)
        for n in range(1, most + 1):
            size = size_for(n, sizes)
            assert size is not None and n <= size and (size == n or size - n < max(n, 8))
        assert size_for(most + 1, sizes) is None
    with pytest.raises(ValueError, match="positive"):
        graph_sizes(0)


def test_mode_follows_the_device_and_bad_settings_are_refused() -> None:
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert resolve_graph_mode(EngineConfig(), cpu) is None
    assert resolve_graph_mode(EngineConfig(), gpu) == "capture"
    assert resolve_graph_mode(EngineConfig(decode_graphs="off"), gpu) is None
    assert resolve_graph_mode(EngineConfig(decode_graphs="eager"), cpu) == "eager"
    with pytest.raises(ValueError, match="decode_graphs 'on'"):
        EngineConfig(decode_graphs="on")
    with pytest.raises(ValueError, match="CUDA device"):
        DecodeGraphs(lambda *a: a[0], max_seqs=4, table_width=4, scratch_block=0, block_size=16, device=cpu,
                     mode="capture")


def test_steps_through_the_buffers_give_the_plain_steps_logits(tiny_llama) -> None:
    """Groups of five, three and one prompts of different lengths decode together (5 rows padded to 8, 3 to 4,
    1 as it is), beside prefill steps that do not qualify; contexts cross 16-slot blocks. Every step's logits
    match the engine without the buffers."""
    folder, _ = tiny_llama
    plain_engine, engine = _engine(folder, decode_graphs="off"), _engine(folder, decode_graphs="eager")
    graphs = engine.runner.graphs
    assert graphs is not None and graphs.sizes == [1, 2, 4, 8, 16]
    for group, lengths in enumerate(([5, 17, 1, 33, 40], [9, 20, 3], [12])):
        prompts = _prompts(lengths, seed=3 + group)
        plain, _ = _run_collecting_logits(plain_engine, prompts, max_tokens=12, tag=f"g{group}-")
        buffered, _ = _run_collecting_logits(engine, prompts, max_tokens=12, tag=f"g{group}-")
        for rid, steps in plain.items():
            assert [context for context, _ in buffered[rid]] == [context for context, _ in steps]
            for (_, ours), (_, ref) in zip(buffered[rid], steps, strict=True):
                torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    assert graphs.replays >= 30


def test_padding_rows_write_only_the_scratch_block(tiny_llama) -> None:
    """Sixteen sequences on a cache with room for little more than them, preempted and recomputed: the block
    manager never hands out the scratch block the padding rows write to, every request gets the tokens the
    plain engine gives, and all blocks are free at the end."""
    folder, _ = tiny_llama
    shared = _prompts([20], seed=4)[0]
    prompts = [shared + p for p in _prompts([3, 9, 1, 14, 6, 2, 11, 5, 7, 4, 8, 12, 2, 6, 3, 10], seed=5)]
    params = SamplingParams(temperature=0, max_tokens=30, ignore_eos=True)
    plain = _engine(folder, decode_graphs="off", num_kv_blocks=40).generate(prompts, params)
    engine = _engine(folder, decode_graphs="eager", num_kv_blocks=40)
    assert engine.runner.kv_caches[0][0].shape[0] == 41  # the scratch block beyond the manager's 40
    out = engine.generate(prompts, params)
    assert engine.scheduler.num_preemptions > 0
    assert engine.runner.graphs is not None and engine.runner.graphs.replays > 0
    assert [o.output_token_ids for o in out] == [o.output_token_ids for o in plain]
    assert engine.block_manager.num_free_blocks == 40


def test_steps_the_buffers_cannot_hold_run_as_before(tiny_llama) -> None:
    """Prompt-lookup drafts make multi-token chunks: those steps take the plain forward, with the same tokens."""
    folder, _ = tiny_llama
    prompt = _prompts([12], seed=6)[0] * 3  # repeats, so prompt lookup finds drafts
    params = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)
    plain = _engine(folder, speculative="prompt-lookup").generate([prompt], params)
    engine = _engine(folder, speculative="prompt-lookup", decode_graphs="eager")
    out = engine.generate([prompt], params)
    assert out[0].output_token_ids == plain[0].output_token_ids
    assert engine.spec_stats.num_steps > 0


def test_the_setting_and_the_bench_flag_reach_the_engine(monkeypatch) -> None:
    """RAGSVC_MODEL__DECODE_GRAPHS for the servers, `bench serving --no-cuda-graphs` for the benchmark."""
    from pydantic import ValidationError
    from typer.testing import CliRunner

    from ragsvc.cli import app
    from ragsvc.config import Settings

    assert EngineConfig.from_settings(Settings()).decode_graphs == "auto"
    monkeypatch.setenv("RAGSVC_MODEL__DECODE_GRAPHS", "off")
    assert EngineConfig.from_settings(Settings()).decode_graphs == "off"
    monkeypatch.setenv("RAGSVC_MODEL__DECODE_GRAPHS", "always")
    with pytest.raises(ValidationError, match="decode_graphs"):
        Settings()
    seen = []

    def stop_after_config(cfg, on_progress):
        seen.append(cfg)
        raise ValueError("stopped before any run")

    monkeypatch.setattr("ragsvc.bench.serving.run_serving_bench", stop_after_config)
    CliRunner().invoke(app, ["bench", "serving", "--no-cuda-graphs", "--systems", "ragsvc"])
    CliRunner().invoke(app, ["bench", "serving", "--systems", "ragsvc"])
    assert [cfg.cuda_graphs for cfg in seen] == [False, True]


def test_steps_split_into_halves_keep_off_the_buffers(tiny_llama) -> None:
    """On two threads a decode step of 40 sequences runs as two halves at once: they must not share the one set
    of buffers (each half would overwrite the other's inputs), so they launch as before; the tokens are those of
    the engine without the buffers."""
    folder, _ = tiny_llama
    torch.set_num_threads(2)  # the runner splits only with two threads; the autouse fixture restores the setting
    prompts = _prompts([3 + i % 7 for i in range(40)], seed=8)
    params = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
    options = dict(num_kv_blocks=128, max_num_seqs=48, enable_prefix_caching=False)
    plain = _engine(folder, decode_graphs="off", **options).generate(prompts, params)
    engine = _engine(folder, decode_graphs="eager", **options)
    assert engine.runner.halves is not None, "the engine must split steps (two torch threads, the C++ setter built)"
    out = engine.generate(prompts, params)
    assert [o.output_token_ids for o in out] == [o.output_token_ids for o in plain]


def test_block_tables_are_a_multiple_of_sixteen_wide(tiny_llama) -> None:
    """One row stride for every step's tables (Triton specialises integer arguments on divisibility by 16), and
    the buffers are as wide, so a decode step of the longest sequences still fits them."""
    folder, _ = tiny_llama
    engine = _engine(folder, decode_graphs="eager", max_model_len=40, num_kv_blocks=16)
    assert engine.runner.graphs is not None and engine.runner.graphs.table_width == 16
    engine.add_request("a", _prompts([30], seed=9)[0], SamplingParams(temperature=0, max_tokens=8, ignore_eos=True))
    engine.add_request("b", [5], SamplingParams(temperature=0, max_tokens=8, ignore_eos=True))
    engine.step()  # the prompts
    sched = engine.scheduler.schedule()
    batch = engine.runner.prepare_whole(sched.chunks)
    tables = batch.meta.decode_block_tables
    assert tables is not None and tables.shape == (2, 16)
    assert engine.runner.graphs.takes(2, batch.meta)


def test_a_one_token_prompt_chunk_rides_with_the_decodes(tiny_llama) -> None:
    """With a 7-token step budget and six sequences decoding, a long prompt is read one token a step beside them:
    such steps hold only single-token chunks, one of them a prompt's middle token (no logits wanted). They run
    through the buffers too, and only the sampling rows come back."""
    folder, _ = tiny_llama
    prompts = _prompts([4, 6, 2, 5, 3, 2, 31], seed=10)
    plain, _ = _run_collecting_logits(_engine(folder, decode_graphs="off", max_num_batched_tokens=7), prompts,
                                      max_tokens=10)
    engine = _engine(folder, decode_graphs="eager", max_num_batched_tokens=7)
    graphs = engine.runner.graphs
    assert graphs is not None
    seen: list[tuple[int, int]] = []
    run = graphs.run

    def recording(input_ids, positions, meta, logit_rows):
        seen.append((input_ids.shape[0], logit_rows.shape[0]))
        logits = run(input_ids, positions, meta, logit_rows)
        assert logits.shape[0] == logit_rows.shape[0]  # the sampling rows, not every row of the step
        return logits

    graphs.run = recording  # type: ignore[method-assign]
    buffered, _ = _run_collecting_logits(engine, prompts, max_tokens=10)
    assert any(rows < tokens for tokens, rows in seen), "no step ran a non-sampling chunk through the buffers"
    for rid, steps in plain.items():
        assert [context for context, _ in buffered[rid]] == [context for context, _ in steps]
        for (_, ours), (_, ref) in zip(buffered[rid], steps, strict=True):
            torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
