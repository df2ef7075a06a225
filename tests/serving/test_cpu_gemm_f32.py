"""cpu_gemm_f32: the float32 decode GEMM against float64 sums, its scalar and AVX2 builds, its plan, and the
engine taking it only for `dtype` "auto" on a float32 CPU (an explicit float32 stays torch's, exact to HF)."""

from __future__ import annotations

import ctypes

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ragsvc.serving.layers import cpu_gemm_f32
from ragsvc.serving.layers.cpu_gemm_f32 import F32Linear, F32Plan, up_to, use_f32_gemm
from tests.serving.kernel_builds import build_for_march

SHAPES = [(1, 1, 1), (1, 8, 3), (2, 9, 2), (3, 31, 17), (4, 64, 5), (5, 576, 1536), (7, 100, 33), (8, 577, 9)]
"""(tokens, in, out): features below, at and past a multiple of 8, odd and even row counts, 1 to 8 tokens."""


@pytest.fixture(scope="module")
def lib() -> ctypes.CDLL:
    built = cpu_gemm_f32.load()
    if built is None:
        pytest.skip("no C++ compiler, or a CPU without AVX2 and FMA: torch's GEMM serves float32 here")
    return built


def _check(lib: ctypes.CDLL, *, with_bias: bool) -> None:
    g = torch.Generator().manual_seed(5)
    for tokens, k, n in SHAPES:
        x, w = torch.randn((tokens, k), generator=g), torch.randn((n, k), generator=g)
        bias = torch.randn(n, generator=g) if with_bias else None
        got = cpu_gemm_f32.linear(lib, x, w, bias, threads=2)
        want = F.linear(x.double(), w.double(), None if bias is None else bias.double())
        assert got.shape == (tokens, n) and got.dtype == torch.float32
        # float32 sums of k products: a few ulps of the largest partial sums
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5 * (k ** 0.5) * 4)


@pytest.mark.parametrize("with_bias", [False, True])
def test_sums_match_float64_for_every_token_count_and_ragged_shape(lib, with_bias):
    _check(lib, with_bias=with_bias)


@pytest.mark.parametrize("march", ["x86-64-v2", "x86-64-v3"])
def test_scalar_and_avx2_builds_give_the_same_sums(tmp_path, march):
    built = build_for_march(tmp_path, "cpu_gemm_f32.cpp", march, cpu_gemm_f32._SIGNATURES)
    flag = ctypes.c_int64(-1)
    built.gemm_f32_vectorised(ctypes.byref(flag))
    assert flag.value == (march == "x86-64-v3")  # v2 has no AVX2: load() would leave it to torch
    _check(built, with_bias=True)


def test_bad_calls_are_refused(lib):
    with pytest.raises(ValueError, match="1 to 8 tokens"):
        cpu_gemm_f32.linear(lib, torch.zeros(9, 4), torch.zeros(3, 4), None, threads=1)
    with pytest.raises(ValueError, match="matching features"):
        cpu_gemm_f32.linear(lib, torch.zeros(2, 4), torch.zeros(3, 5), None, threads=1)
    with pytest.raises(ValueError, match="float32"):
        cpu_gemm_f32.linear(lib, torch.zeros(2, 4, dtype=torch.bfloat16), torch.zeros(3, 4), None, threads=1)
    with pytest.raises(ValueError, match="threads"):
        cpu_gemm_f32.linear(lib, torch.zeros(2, 4), torch.zeros(3, 4), None, threads=0)


def test_the_plan_takes_the_kernel_up_to_where_it_stops_winning():
    assert up_to([[100, 50], [100, 60], [100, 90], [100, 120]]) == 4
    assert up_to([[100, 50], [100, 99], [100, 10], [100, 10]]) == 1  # within 5% stops it, later wins or not
    assert up_to([[100, 150], [100, 50], [100, 50], [100, 50]]) == 0
    assert up_to([[100, 10]] * 4) == 8


def test_routed_linears_keep_their_parameters_and_answer_alike(lib, monkeypatch):
    model = nn.Sequential(nn.Linear(24, 40), nn.Linear(40, 24, bias=False), nn.Linear(24, 7))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plan = F32Plan(up_to={"24x40": 8, "40x24": 2, "24x7": 0})
    monkeypatch.setattr(cpu_gemm_f32, "f32_plan", lambda lib, shapes: plan)
    assert use_f32_gemm(model, lib) == 2
    assert [type(m) for m in model] == [F32Linear, F32Linear, nn.Linear]  # 24x7 measured slower: left alone
    assert model[1].kernel_up_to == 2 and model.state_dict().keys() == before.keys()
    calls: list[int] = []
    real = cpu_gemm_f32.linear
    monkeypatch.setattr(cpu_gemm_f32, "linear", lambda *a, **k: calls.append(a[1].shape[0]) or real(*a, **k))
    for tokens in (1, 3, 9):
        x = torch.randn(tokens, 24)
        with torch.inference_mode():
            got = model(x)
            want = F.linear(F.linear(F.linear(x, before["0.weight"], before["0.bias"]), before["1.weight"]),
                            before["2.weight"], before["2.bias"])
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert calls == [1, 1, 3]  # first layer up to 8 tokens, second up to 2, none at 9
    assert use_f32_gemm(nn.Sequential(nn.Linear(4, 4).to(torch.bfloat16)), lib) == 0  # float32 only
    assert use_f32_gemm(model, None) == 0


@pytest.mark.slow
def test_the_engine_takes_it_for_auto_float32_only_and_greedy_tokens_stay(tiny_llama, monkeypatch):
    """dtype "auto" on a CPU without bf16 resolves to float32 and routes the linears; an explicit "float32"
    never does. Pinned here to a float32 CPU (`cpu_has_bf16` false), whatever this machine is; decode steps and
    the one-token prompt rows of the LM head take the kernel, and the greedy tokens are torch's."""
    from ragsvc.serving import config as config_module
    from ragsvc.serving.config import EngineConfig
    from ragsvc.serving.engine import LLMEngine
    from ragsvc.serving.sampling_params import SamplingParams

    if cpu_gemm_f32.load() is None:
        pytest.skip("no AVX2 build of the kernel here")
    monkeypatch.setattr(config_module, "cpu_has_bf16", lambda: False)
    # the tiny model's weights sit in cache, where torch may measure faster: the plan is pinned to the kernel
    monkeypatch.setattr(cpu_gemm_f32, "f32_plan", lambda lib, shapes: F32Plan(
        up_to={cpu_gemm_f32.shape_key(k, n): 8 for k, n in shapes}))
    folder, _ = tiny_llama
    outputs = {}
    for dtype in ("auto", "float32"):
        engine = LLMEngine.from_config(EngineConfig(model=str(folder), dtype=dtype, device="cpu", num_kv_blocks=64))
        routed = [m for m in engine.runner.model.modules() if isinstance(m, F32Linear)]
        assert bool(routed) == (dtype == "auto"), dtype
        params = SamplingParams(max_tokens=6, temperature=0.0, logprobs=1)
        outputs[dtype] = [(o.output_token_ids, [lp.logprob for lp in o.logprobs])
                          for o in engine.generate([[1, 5, 9, 12], [3, 3, 8]], params)]
    for (tokens_auto, lps_auto), (tokens_f32, lps_f32) in zip(outputs["auto"], outputs["float32"], strict=True):
        assert tokens_auto == tokens_f32
        assert lps_auto == pytest.approx(lps_f32, abs=1e-4)
