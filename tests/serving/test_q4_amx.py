"""The AMX q4 kernel (cpu_q4_amx) against its plain-torch form, with odd shapes: K off the 32-block and the
64-weight group, N off the 16-row tiles and the 32-row panels, tokens off the 16-token tiles, and enough
tokens for several passes over the weight; then the dispatch and the plan. The kernel needs a CPU with
AMX_BF16 (Sapphire Rapids and later): elsewhere these tests skip, and the int8-activation kernel's tests cover
the path those CPUs take."""

from __future__ import annotations

import ctypes

import pytest
import torch

from ragsvc.serving.layers import cpu_q4_amx, cpu_quant
from ragsvc.serving.layers.cpu_tuning import KERNEL_CANDIDATES, QuantPlan, cpu_info, measure_plan
from ragsvc.serving.layers.quant import dequantise, quantise
from ragsvc.serving.layers.quant_linear import QuantLinear
from tests.serving.kernel_closeness import assert_close_to_largest

SHAPES = [(1, 1, 3), (2, 31, 17), (3, 33, 5), (16, 64, 16), (17, 100, 33), (33, 600, 70), (70, 1000, 9),
          (40, 129, 48), (5, 64, 100)]
"""(tokens, in, out)."""


@pytest.fixture(scope="module")
def lib() -> ctypes.CDLL:
    built = cpu_q4_amx.load()
    if built is None:
        pytest.skip("no AMX here (or no compiler): the kernel has nothing to run on")
    return built


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernel_matches_its_torch_form(lib, dtype) -> None:
    g = torch.Generator().manual_seed(0)
    for tokens, k, n in SHAPES:
        w, bias = torch.randn((n, k), generator=g), torch.randn(n, generator=g)
        x = torch.randn((tokens, k), generator=g).to(dtype)
        qw = quantise(w, "q4")
        assert_close_to_largest(cpu_q4_amx.linear(lib, x, qw, bias), cpu_q4_amx.reference_linear(x, qw, bias), dtype)
        assert_close_to_largest(cpu_q4_amx.linear(lib, x, qw, None), cpu_q4_amx.reference_linear(x, qw, None), dtype)


def test_many_tokens_take_several_passes_and_every_row_is_right(lib) -> None:
    """600 tokens over K = 64 are three passes of 256 (the activations a pass keeps in L2); every output is
    compared, not only the largest, in fp32 where only the summation order differs from the reference."""
    g = torch.Generator().manual_seed(1)
    w, bias = torch.randn((50, 64), generator=g), torch.randn(50, generator=g)
    x = torch.randn((600, 64), generator=g)
    qw = quantise(w, "q4")
    torch.testing.assert_close(cpu_q4_amx.linear(lib, x, qw, bias), cpu_q4_amx.reference_linear(x, qw, bias),
                               rtol=1e-5, atol=1e-4)


def test_weights_are_the_dequantised_ones_rounded_to_bf16(lib) -> None:
    """One-hot activations read single weights back: each must be dequantise()'s value rounded to bf16 exactly."""
    g = torch.Generator().manual_seed(2)
    qw = quantise(torch.randn((37, 96), generator=g), "q4")
    got = cpu_q4_amx.linear(lib, torch.eye(96), qw, None)  # (96, 37): row k is column k of the weight
    assert torch.equal(got.T, dequantise(qw).to(torch.bfloat16).float())


def test_bad_inputs_are_refused(lib) -> None:
    qw = quantise(torch.randn((4, 64)), "q4")
    with pytest.raises(ValueError, match="expects 64"):
        cpu_q4_amx.linear(lib, torch.randn((2, 63)), qw, None)
    with pytest.raises(ValueError, match="q4 weights"):
        cpu_q4_amx.linear(lib, torch.randn((2, 64)), quantise(torch.randn((4, 64)), "int8"), None)
    with pytest.raises(ValueError, match="fp32 or bf16"):
        cpu_q4_amx.linear(lib, torch.randn((2, 64), dtype=torch.float16), qw, None)
    with pytest.raises(ValueError, match="bias"):
        cpu_q4_amx.linear(lib, torch.randn((2, 64)), qw, torch.randn(5))
    assert cpu_q4_amx.linear(lib, torch.randn((0, 64)), qw, None).shape == (0, 4)


def test_dispatch_follows_the_plan(lib) -> None:
    """QuantLinear takes the AMX kernel from the plan's token count up, ahead of the int8-activation kernel;
    below it the other paths, and int8 weights never."""
    quant = cpu_quant.load()
    if quant is None:
        pytest.skip("no C++ compiler")
    g = torch.Generator().manual_seed(3)
    w, bias = torch.randn((40, 100), generator=g), torch.randn(40, generator=g)
    layer = QuantLinear(quantise(w, "q4"), bias)
    plan = QuantPlan(tile=4, prefill_tokens=64, tile_ms={}, prefill_ms={}, amx_tokens=8)
    layer.use_kernels(quant, plan)
    for tokens in (2, 8, 20):
        x = torch.randn((tokens, 100), generator=g).to(torch.bfloat16)
        amx = cpu_q4_amx.linear(lib, x, layer.qw, layer.bias_f32)
        bf16 = cpu_quant.linear(quant, x, layer.qw, layer.bias_f32, tile=4)
        assert torch.equal(layer(x), amx if tokens >= 8 else bf16)
    int8_layer = QuantLinear(quantise(w, "int8"), bias)
    int8_layer.use_kernels(quant, plan)
    x = torch.randn((20, 100), generator=g).to(torch.bfloat16)
    assert torch.equal(int8_layer(x), cpu_quant.linear(quant, x, int8_layer.qw, int8_layer.bias_f32, tile=4))


def test_plan_measures_the_amx_kernel(lib) -> None:
    quant = cpu_quant.load()
    if quant is None:
        pytest.skip("no C++ compiler")
    plan = measure_plan(quant, cpu_info(), k=64)
    assert set(plan.amx_ms) == {str(m) for m in KERNEL_CANDIDATES}
    assert plan.amx_tokens == 0 or str(plan.amx_tokens) in plan.amx_ms
