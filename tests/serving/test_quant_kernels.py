"""The quantised-linear kernels against de-quantise-then-matmul, and the formats against the weights they
stand for: every format, fp32 and bf16 activations, odd shapes (K not a multiple of the 32-block or the
64-weight group), every token tile, and the tile remainder."""

from __future__ import annotations

import pytest
import torch

from ragsvc.serving.layers import cpu_quant
from ragsvc.serving.layers.cpu_tuning import QuantPlan, cpu_info, measure_plan
from ragsvc.serving.layers.quant import BLOCK, dequantise, quantise, reference_linear
from ragsvc.serving.layers.quant_linear import QuantLinear

SHAPES = [(1, 1, 3), (3, 31, 5), (7, 33, 17), (9, 100, 37), (5, 64, 64), (2, 200, 129)]
"""(tokens, in, out)."""


@pytest.fixture(scope="module")
def lib():
    built = cpu_quant.load()
    if built is None:
        pytest.skip("no C++ compiler: the quantised kernels cannot be built here")
    return built


def _close(got: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype) -> None:
    # fp32: the sums run in another order (and q4 adds and removes 128 * sum(x) per block); bf16: one rounding
    # of the output, so a bf16 step of the largest value.
    scale = ref.float().abs().max().item() + 1e-6
    tol = 1e-4 if dtype == torch.float32 else 8e-3
    err = (got.float() - ref.float()).abs().max().item() / scale
    assert err <= tol, f"max error {err:.2e} of the largest output > {tol}"


@pytest.mark.parametrize("fmt", ["int8", "q4"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("tile", cpu_quant.TILES)
def test_kernel_matches_dequantise_then_matmul(lib, fmt, dtype, tile) -> None:
    g = torch.Generator().manual_seed(0)
    for tokens, k, n in SHAPES:
        w = torch.randn((n, k), generator=g)
        x = torch.randn((tokens, k), generator=g).to(dtype)
        bias = torch.randn(n, generator=g)
        qw = quantise(w, fmt)
        _close(cpu_quant.linear(lib, x, qw, bias, tile=tile), reference_linear(x, qw, bias), dtype)
        _close(cpu_quant.linear(lib, x, qw, None, tile=tile), reference_linear(x, qw, None), dtype)


@pytest.mark.parametrize("fmt", ["int8", "q4"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernel_expansion_matches_reference(lib, fmt, dtype) -> None:
    w = torch.randn((37, 100))
    qw = quantise(w, fmt)
    torch.testing.assert_close(cpu_quant.dequantise(lib, qw, dtype), dequantise(qw).to(dtype), rtol=0, atol=1e-6)


def test_int8_round_off_is_half_a_step() -> None:
    w = torch.randn((16, 100)) * torch.logspace(-3, 1, 16)[:, None]  # rows of very different scales
    qw = quantise(w, "int8")
    step = w.abs().amax(dim=1, keepdim=True) / 127
    assert bool(((dequantise(qw) - w).abs() <= step / 2 + 1e-7).all())


def test_q4_round_off_is_half_a_step_per_block() -> None:
    w = torch.randn((8, 96)) * 0.05
    qw = quantise(w, "q4")
    blocks = w.view(8, -1, BLOCK)
    step = (blocks.amax(dim=2) - blocks.amin(dim=2)) / 15
    err = (dequantise(qw) - w).abs().view(8, -1, BLOCK)
    assert bool((err <= step[..., None] * 0.51 + 1e-6).all())  # 0.51: d and m are stored as fp16


def test_q4_keeps_a_4bit_grid_exact() -> None:
    """Weights already on a 16-level grid per 32-block (what a GGUF Q4_K sub-block de-quantises to) come back
    exactly, up to the fp16 rounding of scale and offset."""
    g = torch.Generator().manual_seed(3)
    levels = torch.randint(0, 16, (4, 8, BLOCK), generator=g)
    levels[..., 0], levels[..., 1] = 0, 15  # each block uses its lowest and highest level
    d = torch.rand((4, 8, 1), generator=g).half().float() * 0.01
    m = -torch.rand((4, 8, 1), generator=g).half().float() * 0.05
    w = (levels * d + m).view(4, -1)
    err = (dequantise(quantise(w, "q4")) - w).abs().max().item()
    assert err <= 1e-3 * w.abs().max().item()


def test_q4_padding_rows_are_zero_for_any_k() -> None:
    for k in (1, 31, 33, 65):
        qw = quantise(torch.randn((3, k)), "q4")
        assert qw.padded_in % 64 == 0 and dequantise(qw).shape == (3, k)


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot be quantised"):
        quantise(torch.randn((2, 2)), "q3")


@pytest.mark.parametrize("fmt", ["int8", "q4"])
def test_long_prefill_path_matches_the_kernel(lib, fmt) -> None:
    """Above the plan's token threshold QuantLinear expands the weight and calls the GEMM; both paths agree."""
    w, bias = torch.randn((48, 100)), torch.randn(48)
    layer = QuantLinear(quantise(w, fmt), bias)
    x = torch.randn((12, 100), dtype=torch.bfloat16)
    layer.use_kernels(lib, QuantPlan(tile=4, prefill_tokens=64, tile_ms={}, prefill_ms={}))
    fused = layer(x)
    layer.use_kernels(lib, QuantPlan(tile=4, prefill_tokens=4, tile_ms={}, prefill_ms={}))
    _close(layer(x), fused, torch.bfloat16)


def test_plan_is_measured_from_the_cpu(lib) -> None:
    info = cpu_info()
    assert info.logical_cpus >= 1 and info.model
    plan = measure_plan(lib, info, k=64)
    assert plan.tile in cpu_quant.TILES and set(plan.tile_ms) == {str(t) for t in cpu_quant.TILES}
    assert plan.prefill_tokens >= 1 and plan.prefill_ms
