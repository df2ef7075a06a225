"""The few-token bf16 GEMM: exact against its reference order on odd shapes, within a bf16 step of oneDNN,
the per-CPU plan's choices, and the packed linear's dispatch by that plan with oneDNN as the fallback."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ragsvc.serving.layers import cpu_gemm_bf16, cpu_gemm_plan
from ragsvc.serving.layers.cpu_gemm_plan import ONEDNN, TOKENS, GemmPlan, pick, pick_fma
from ragsvc.serving.layers.linear import PackedLinear, can_pack, packed_shapes, use_small_gemm
from tests.serving.kernel_closeness import assert_close_to_largest


@pytest.fixture(scope="module")
def lib():
    lib = cpu_gemm_bf16.load()
    if lib is None:
        pytest.skip("no compiler or no AVX512-BF16: the small GEMM is not built, oneDNN keeps every call")
    return lib


def _bf16(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(torch.bfloat16)


# odd K (a padded pair), N not a multiple of 16 or of a 64-output tile, token counts off the 6-row block
@pytest.mark.parametrize("m,k,n", [(1, 7, 5), (5, 33, 17), (13, 64, 100), (6, 576, 97), (7, 130, 64), (19, 96, 80)])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("fma", [False, True], ids=["dpbf16", "fma"])
def test_kernel_matches_its_reference_order_exactly(lib, m, k, n, threads, fma) -> None:
    x, w = _bf16(m, k, seed=m), _bf16(n, k, seed=n)
    got = cpu_gemm_bf16.linear(lib, x, cpu_gemm_bf16.pack(lib, w), threads=threads, fma=fma)
    assert got.shape == (m, n) and got.dtype == torch.bfloat16
    assert torch.equal(got, cpu_gemm_bf16.reference_linear(x, w))
    assert_close_to_largest(got, F.linear(x, w), torch.bfloat16)


def test_kernel_reads_a_strided_input_and_returns_nothing_for_no_tokens(lib) -> None:
    w = _bf16(48, 64, seed=1)
    packed = cpu_gemm_bf16.pack(lib, w)
    wide = _bf16(4, 128, seed=2)
    assert torch.equal(cpu_gemm_bf16.linear(lib, wide[:, :64], packed, threads=1),
                       cpu_gemm_bf16.reference_linear(wide[:, :64], w))
    assert cpu_gemm_bf16.linear(lib, wide[:0, :64], packed, threads=1).shape == (0, 48)


def test_pack_writes_into_a_slice_of_a_shared_buffer(lib) -> None:
    w1, w2 = _bf16(17, 33, seed=6), _bf16(40, 64, seed=7)
    sizes = [cpu_gemm_bf16.packed_numel(17, 33), cpu_gemm_bf16.packed_numel(40, 64)]
    arena = torch.empty(sum(sizes), dtype=torch.bfloat16)
    p1, p2 = (cpu_gemm_bf16.pack(lib, w, part) for w, part in zip((w1, w2), arena.split(sizes), strict=True))
    assert p2.data.data_ptr() == arena.data_ptr() + 2 * sizes[0]
    x1, x2 = _bf16(3, 33, seed=8), _bf16(3, 64, seed=9)
    assert torch.equal(cpu_gemm_bf16.linear(lib, x1, p1, threads=2), cpu_gemm_bf16.reference_linear(x1, w1))
    assert torch.equal(cpu_gemm_bf16.linear(lib, x2, p2, threads=2), cpu_gemm_bf16.reference_linear(x2, w2))
    with pytest.raises(ValueError, match="elements"):
        cpu_gemm_bf16.pack(lib, w1, arena[: sizes[0] - 1])


def test_kernel_refuses_what_it_cannot_multiply(lib) -> None:
    packed = cpu_gemm_bf16.pack(lib, _bf16(16, 32, seed=0))
    with pytest.raises(ValueError, match="expects 32"):
        cpu_gemm_bf16.linear(lib, _bf16(2, 31, seed=0), packed, threads=1)
    with pytest.raises(ValueError, match="bf16"):
        cpu_gemm_bf16.linear(lib, torch.zeros(2, 32), packed, threads=1)
    with pytest.raises(ValueError, match="threads"):
        cpu_gemm_bf16.linear(lib, _bf16(2, 32, seed=0), packed, threads=0)
    with pytest.raises(ValueError, match="2-d bf16"):
        cpu_gemm_bf16.pack(lib, torch.zeros(16, 32))


def test_pick_keeps_onednn_on_ties_and_takes_the_faster() -> None:
    assert pick([10.0, 10.0], 2) == ONEDNN
    assert pick([10.0, 12.0], 2) == ONEDNN
    assert pick([10.0, 6.0], 4) == 4
    assert pick([10.0, 12.0, 9.0], 2) == 2  # the FMA form alone beat oneDNN
    assert not pick_fma([10.0, 6.0]) and not pick_fma([10.0, 6.0, 6.0]) and pick_fma([10.0, 6.0, 5.0])


def test_plan_choice_takes_the_bucket_at_or_above_and_onednn_past_the_last() -> None:
    plan = GemmPlan(threads={"64x32": [1, 1, 2, 0, 2]}, us={})
    assert [plan.choice(64, 32, m) for m in (1, 2, 8, 9, 16, 17, 32, 64, 65)] == [1, 1, 1, 2, 2, 0, 0, 2, 0]
    assert plan.choice(64, 33, 1) == ONEDNN  # a shape the plan never measured
    assert plan.uses_kernel(64, 32) and not plan.uses_kernel(64, 33)
    assert plan.kernel(64, 32, 8) == (1, False)  # a plan without FMA choices: vdpbf16ps
    mixed = GemmPlan(threads={"64x32": [1, 1, 2, 0, 2]}, us={}, fma={"64x32": [False, True, True, False, True]})
    assert [mixed.kernel(64, 32, m) for m in (1, 8, 16, 64, 65)] == [(1, False), (1, True), (2, True), (2, True),
                                                                     (ONEDNN, False)]


def test_plan_is_measured_once_then_read_back(lib, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    measured = []
    real = cpu_gemm_plan.measure_shape

    def counting(*args, **kwargs):
        measured.append(args[1:3])
        return real(*args, **kwargs)

    monkeypatch.setattr(cpu_gemm_plan, "measure_shape", counting)
    monkeypatch.setattr(cpu_gemm_plan, "TOKENS", (1, 8))
    first = cpu_gemm_plan.gemm_plan(lib, [(32, 16), (32, 16)])
    assert measured == [(32, 16)]
    assert len(first.us["32x16"]) == 2 and all(len(row) == 3 and min(row) > 0 for row in first.us["32x16"])
    assert first.fma["32x16"] == [row[2] < row[1] for row in first.us["32x16"]]
    [cached] = list((tmp_path / "ragsvc" / "kernels").glob("gemm-plan-*.json"))
    assert json.loads(cached.read_text())["threads"] == first.threads
    assert cpu_gemm_plan.gemm_plan(lib, [(32, 16)]) == first and measured == [(32, 16)]


def _packed(k: int, n: int, *, bias: bool = False) -> PackedLinear:
    linear = nn.Linear(k, n, bias=bias).to(torch.bfloat16)
    return PackedLinear(linear, batch_hint=32)


@pytest.mark.skipif(not can_pack(torch.bfloat16, torch.device("cpu")), reason="no oneDNN bf16 packing here")
def test_packed_linear_takes_the_kernel_where_the_plan_says_and_onednn_elsewhere(lib) -> None:
    model = nn.Sequential(_packed(64, 40), _packed(64, 40, bias=True), _packed(40, 24))
    plan = GemmPlan(threads={"64x40": [1] * len(TOKENS), "40x24": [ONEDNN] * len(TOKENS)}, us={})
    assert packed_shapes(model) == [(40, 24), (64, 40)]  # bias-free shapes only
    weight, biased = model[0].weight, model[1].weight
    assert weight is not None and biased is not None
    assert use_small_gemm(model, lib, plan) == 1
    assert model[0].small is not None and model[1].small is None and model[2].small is None
    assert all(m.weight is None for m in model)  # the plain weights are let go once packed (or not)
    x = _bf16(9, 64, seed=3)
    with torch.inference_mode():
        assert torch.equal(model[0](x), cpu_gemm_bf16.reference_linear(x, weight))  # the kernel
        long = _bf16(TOKENS[-1] + 1, 64, seed=4)
        assert torch.equal(model[0](long), F.linear(long, weight))  # past the plan's counts: oneDNN
        assert torch.equal(model[1](x), F.linear(x, biased, model[1].bias))  # a bias: oneDNN, whatever the plan


@pytest.mark.skipif(not can_pack(torch.bfloat16, torch.device("cpu")), reason="no oneDNN bf16 packing here")
def test_without_the_kernel_every_call_stays_on_onednn() -> None:
    model = nn.Sequential(_packed(64, 40))
    weight = model[0].weight
    assert weight is not None
    assert use_small_gemm(model, None, None) == 0
    x = _bf16(3, 64, seed=5)
    with torch.inference_mode():
        assert model[0].small is None and torch.equal(model[0](x), F.linear(x, weight))


@pytest.mark.skipif(not can_pack(torch.bfloat16, torch.device("cpu")), reason="no oneDNN bf16 packing here")
@pytest.mark.parametrize("fma", [False, True], ids=["dpbf16", "fma"])
def test_engine_with_the_small_gemm_tracks_fp32_hf_and_frees_no_block_twice(lib, tiny_llama, monkeypatch,
                                                                             fma) -> None:
    """A bf16 engine whose plan sends every decode-sized call to the kernel (in either form): logits within bf16
    rounding of HF's fp32 logits (the bar of the oneDNN bf16 path), every block back at the end; small_gemm=False
    keeps oneDNN."""
    from ragsvc.serving.config import EngineConfig
    from ragsvc.serving.engine import LLMEngine
    from ragsvc.serving.models import llama
    from ragsvc.serving.sampling_params import SamplingParams

    folder, hf_model = tiny_llama

    def always(_lib, shapes):
        keys = [cpu_gemm_plan.shape_key(k, n) for k, n in shapes]
        return GemmPlan(threads={key: [2] * len(TOKENS) for key in keys}, us={},
                        fma={key: [fma] * len(TOKENS) for key in keys})

    monkeypatch.setattr(llama, "gemm_plan", always)
    options = dict(model=str(folder), dtype="bfloat16", device="cpu", block_size=4, num_kv_blocks=64)
    plain = LLMEngine.from_config(EngineConfig(**options, small_gemm=False))
    assert all(getattr(m, "small", None) is None for m in plain.runner.model.modules())
    engine = LLMEngine.from_config(EngineConfig(**options))
    linears = [m for m in engine.runner.model.modules() if isinstance(m, PackedLinear)]
    assert linears and all(m.small is not None for m in linears)
    prompts = [torch.randint(3, 500, (n,), generator=torch.Generator().manual_seed(n)).tolist() for n in (5, 17)]
    outs = engine.generate(prompts, SamplingParams(temperature=0, max_tokens=6, ignore_eos=True))
    for prompt, out in zip(prompts, outs, strict=True):
        context = prompt + out.output_token_ids[:-1]
        with torch.no_grad():
            ref = hf_model(torch.tensor([context])).logits[0, -1]
        assert int(ref.argmax()) == out.output_token_ids[-1] or \
            float(ref.topk(2).values.diff().abs()) < 0.05 * float(ref.abs().max())  # a bf16 near-tie
    assert engine.block_manager.num_free_blocks == 64


@pytest.mark.skipif(not can_pack(torch.bfloat16, torch.device("cpu")), reason="no oneDNN bf16 packing here")
def test_onednn_calls_run_over_rows_rounded_up() -> None:
    layer = _packed(64, 40)  # no plan: every call is oneDNN's
    x = _bf16(45, 64, seed=5)
    with torch.inference_mode():
        padded = torch.ops.mkldnn._linear_pointwise(F.pad(x, [0, 0, 0, 3]), layer.packed, None, "none", [], "")
        assert torch.equal(layer(x), padded[:45]), "45 rows run as gemm_rows' 48: one built kernel for 33-48"
