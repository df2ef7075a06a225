"""Widening many-token bf16 linears to fp32: the plan's choice rule, the packed linear's dispatch by it (the plain
weight kept only where it widens), the plan cached once measured, and an engine that widens every prompt step
tracking HF's fp32 logits."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from ragsvc.serving.layers import cpu_wide_gemm
from ragsvc.serving.layers.cpu_wide_gemm import NEVER, TOKENS, WidePlan, first_winning, widened_linear
from ragsvc.serving.layers.linear import PackedLinear, can_pack, packed_shapes, use_small_gemm, use_wide_gemm

needs_packing = pytest.mark.skipif(not can_pack(torch.bfloat16, torch.device("cpu")),
                                   reason="no oneDNN bf16 packing here")


def _bf16(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(torch.bfloat16)


def test_first_winning_is_the_start_of_the_last_unbroken_run_of_wins() -> None:
    assert first_winning((64, 128, 256), [[2, 1], [2, 1], [2, 1]]) == 64
    assert first_winning((64, 128, 256), [[1, 2], [2, 1], [2, 1]]) == 128
    assert first_winning((64, 128, 256), [[2, 1], [1, 2], [2, 1]]) == 256  # a loss in between restarts the run
    assert first_winning((64, 128, 256), [[2, 1], [2, 1], [1, 2]]) == NEVER  # lost at the largest
    assert first_winning((64, 128, 256), [[2, 2]] * 3) == NEVER  # a tie keeps oneDNN
    assert first_winning((64, 128, 256), [[2, 1]]) == 64  # only the smallest measured: its choice holds above
    assert first_winning((64, 128), []) == NEVER


@given(st.lists(st.tuples(st.floats(1, 1e6), st.floats(1, 1e6)), min_size=1, max_size=len(TOKENS)))
def test_from_the_chosen_count_up_widening_won_every_measurement(rows) -> None:
    start = first_winning(TOKENS, [list(r) for r in rows])
    won = [wide < bf16 for bf16, wide in rows]
    if start == NEVER:
        assert not won[-1]
    else:
        i = TOKENS.index(start)
        assert all(won[i:]) and (i == 0 or not won[i - 1])


def test_widened_linear_is_the_fp32_product_rounded_once() -> None:
    x, w, b = _bf16(7, 33, seed=1), _bf16(5, 33, seed=2), _bf16(5, seed=3)
    got = widened_linear(x, w, b)
    assert got.dtype == torch.bfloat16 and got.shape == (7, 5)
    exact = x.double() @ w.double().T + b.double()  # bf16 products are exact; only the sums' order may differ
    torch.testing.assert_close(got.double(), exact, rtol=2 ** -8, atol=1e-5)  # within one bf16 rounding


def test_plan_start_lists_only_thread_counts_that_widen() -> None:
    plan = WidePlan(from_tokens={"64x40": {"1": 128, "2": NEVER}}, us={})
    assert plan.start(64, 40) == {1: 128}
    assert plan.start(40, 24) == {}


def _packed(k: int, n: int, *, bias: bool = False) -> PackedLinear:
    return PackedLinear(nn.Linear(k, n, bias=bias).to(torch.bfloat16), batch_hint=32)


@needs_packing
def test_packed_linear_widens_from_the_planned_count_on_its_thread_count_and_keeps_only_those_weights() -> None:
    model = nn.Sequential(_packed(64, 40), _packed(64, 40, bias=True), _packed(40, 24))
    threads = torch.get_num_threads()
    plan = WidePlan(from_tokens={"64x40": {str(threads): 16}, "40x24": {str(threads): NEVER}}, us={})
    assert packed_shapes(model, with_bias=True) == [(40, 24), (64, 40)]
    weights = [m.weight for m in model]
    assert use_wide_gemm(model, plan) == 2  # both 64x40 linears, bias or not
    assert use_small_gemm(model, None, None) == 0
    assert model[0].weight is weights[0] and model[1].weight is weights[1] and model[2].weight is None
    few, many = _bf16(15, 64, seed=3), _bf16(16, 64, seed=4)
    with torch.inference_mode():
        assert torch.equal(model[0](few), F.linear(few, weights[0]))  # below the start: oneDNN
        assert torch.equal(model[0](many), widened_linear(many, weights[0], None))
        assert torch.equal(model[1](many), widened_linear(many, weights[1], model[1].bias))
        assert torch.equal(model[2](_bf16(99, 40, seed=5)), F.linear(_bf16(99, 40, seed=5), weights[2]))
        torch.set_num_threads(threads + 1)  # a thread count the plan has no row for: oneDNN
        try:
            assert torch.equal(model[0](many), F.linear(many, weights[0]))
        finally:
            torch.set_num_threads(threads)


@needs_packing
def test_without_a_plan_nothing_widens_and_the_plain_weights_go() -> None:
    model = nn.Sequential(_packed(64, 40))
    assert use_wide_gemm(model, None) == 0
    use_small_gemm(model, None, None)
    assert model[0].wide_from == {} and model[0].weight is None


@needs_packing
def test_plan_is_measured_once_then_read_back(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(cpu_wide_gemm, "TOKENS", (4, 8))
    measured = []
    real = cpu_wide_gemm.measure_shape

    def counting(*args, **kwargs):
        measured.append((args, kwargs["threads"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(cpu_wide_gemm, "measure_shape", counting)
    first = cpu_wide_gemm.wide_plan([(32, 16), (32, 16)])
    counts = cpu_wide_gemm.thread_counts(torch.get_num_threads())
    assert measured == [((32, 16), t) for t in counts]
    rows = first.us["32x16"]
    assert set(rows) == {str(t) for t in counts}
    assert all(len(r) == 2 and len(r[0]) == 2 and min(r[0]) > 0 for r in rows.values())
    [cached] = list((tmp_path / "ragsvc" / "kernels").glob("wide-plan-*.json"))
    assert json.loads(cached.read_text())["from_tokens"] == first.from_tokens
    assert cpu_wide_gemm.wide_plan([(32, 16)]) == first and len(measured) == len(counts)


@needs_packing
def test_a_gemm_over_the_measuring_bound_is_not_timed(monkeypatch) -> None:
    monkeypatch.setattr(cpu_wide_gemm, "MAX_MEASURED_FLOP", 2 * 64 * 32 * 16)
    monkeypatch.setattr(cpu_wide_gemm, "TOKENS", (64, 128))
    assert len(cpu_wide_gemm.measure_shape(32, 16, threads=1)) == 1


@needs_packing
def test_engine_that_widens_every_prompt_step_tracks_fp32_hf(tiny_llama, monkeypatch) -> None:
    """A bf16 engine whose plan widens every call of 2+ tokens (prompt steps, batched decodes): greedy tokens
    within bf16 rounding of HF's fp32 logits; wide_gemm=False keeps every linear on oneDNN."""
    from ragsvc.serving.config import EngineConfig
    from ragsvc.serving.engine import LLMEngine
    from ragsvc.serving.models import llama
    from ragsvc.serving.sampling_params import SamplingParams

    folder, hf_model = tiny_llama
    threads = cpu_wide_gemm.thread_counts(torch.get_num_threads())

    def always(shapes):
        return WidePlan(from_tokens={f"{k}x{n}": {str(t): 2 for t in threads} for k, n in shapes}, us={})

    monkeypatch.setattr(llama, "wide_plan", always)
    options = dict(model=str(folder), dtype="bfloat16", device="cpu", block_size=4, num_kv_blocks=64)
    plain = LLMEngine.from_config(EngineConfig(**options, wide_gemm=False))
    assert all(not m.wide_from for m in plain.runner.model.modules() if isinstance(m, PackedLinear))
    engine = LLMEngine.from_config(EngineConfig(**options))
    linears = [m for m in engine.runner.model.modules() if isinstance(m, PackedLinear)]
    assert linears and all(m.wide_from and m.weight is not None for m in linears)
    prompts = [torch.randint(3, 500, (n,), generator=torch.Generator().manual_seed(n)).tolist() for n in (5, 17)]
    outs = engine.generate(prompts, SamplingParams(temperature=0, max_tokens=6, ignore_eos=True))
    for prompt, out in zip(prompts, outs, strict=True):
        for step in range(len(out.output_token_ids)):
            context = prompt + out.output_token_ids[:step]
            with torch.no_grad():
                ref = hf_model(torch.tensor([context])).logits[0, -1]
            assert int(ref.argmax()) == out.output_token_ids[step] or \
                float(ref.topk(2).values.diff().abs()) < 0.05 * float(ref.abs().max())  # a bf16 near-tie
    assert engine.block_manager.num_free_blocks == 64
