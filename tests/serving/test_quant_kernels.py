"""The quantised-linear kernels against de-quantise-then-matmul, and the formats against the weights they
stand for: every format, fp32 and bf16 activations, odd shapes (K not a multiple of the 32-block or the
64-weight group), every token tile, and the tile remainder."""

from __future__ import annotations

import pytest
import torch

from ragsvc.serving.layers import cpu_quant
from ragsvc.serving.layers.cpu_tuning import QuantPlan, cpu_info, measure_plan
from ragsvc.serving.layers.quant import BLOCK, dequantise, grid_error, quantise, reference_linear
from ragsvc.serving.layers.quant_linear import QuantLinear
from tests.serving.kernel_builds import build_for_march
from tests.serving.kernel_closeness import assert_close_to_largest

SHAPES = [(1, 1, 3), (3, 31, 5), (7, 33, 17), (9, 100, 37), (5, 64, 64), (2, 200, 129)]
"""(tokens, in, out)."""


@pytest.fixture(scope="module")
def lib():
    built = cpu_quant.load()
    if built is None:
        pytest.skip("no C++ compiler: the quantised kernels cannot be built here")
    return built


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
        assert_close_to_largest(cpu_quant.linear(lib, x, qw, bias, tile=tile), reference_linear(x, qw, bias), dtype)
        assert_close_to_largest(cpu_quant.linear(lib, x, qw, None, tile=tile), reference_linear(x, qw, None), dtype)


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


def test_q4_fit_is_no_worse_than_min_max_per_block() -> None:
    """Each block keeps the best of its spans: never more squared error than the plain min/max fit (whose
    round-off is at most half a step), and within a step everywhere."""
    w = torch.randn((8, 96)) * 0.05
    blocks = w.view(8, -1, BLOCK)
    lo, hi = blocks.amin(dim=2, keepdim=True), blocks.amax(dim=2, keepdim=True)
    d, m = ((hi - lo) / 15).half().float(), lo.half().float()
    min_max = (torch.round((blocks - m) / d).clamp(0, 15) * d + m - blocks).pow(2).sum(dim=2)
    err = (dequantise(quantise(w, "q4")) - w).view(8, -1, BLOCK)
    assert bool((err.pow(2).sum(dim=2) <= min_max * (1 + 1e-4) + 1e-12).all())
    assert bool((err.abs() <= (hi - lo) / 12 + 1e-6).all())


def test_q4_keeps_a_4bit_grid_exact() -> None:
    """Weights already on a 16-level grid per 32-block (what a GGUF Q4_K sub-block de-quantises to) come back
    exactly, up to the fp16 rounding of scale and offset, also when the block never reaches its top levels;
    grid_error tells them from weights spread over a range."""
    g = torch.Generator().manual_seed(3)
    levels = torch.randint(0, 16, (4, 8, BLOCK), generator=g)
    levels[..., 0] = 0  # each block uses its lowest level; some miss the top one or two
    levels[:2, :, 1] = 15
    levels[2:] = levels[2:].clamp(max=13)
    d = torch.rand((4, 8, 1), generator=g).half().float() * 0.01
    m = -torch.rand((4, 8, 1), generator=g).half().float() * 0.05
    w = (levels * d + m).view(4, -1)
    qw = quantise(w, "q4")
    err = (dequantise(qw) - w).abs().max().item()
    assert err <= 1e-3 * w.abs().max().item()
    assert grid_error(w, qw) < 0.02
    spread = torch.randn((4, 256), generator=g)
    assert grid_error(spread, quantise(spread, "q4")) > 0.15


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
    assert_close_to_largest(layer(x), fused, torch.bfloat16)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_q4_gemm_matches_dequantise_then_matmul(lib, dtype) -> None:
    """Steps of 2 to a few hundred tokens (bf16: the panel GEMM; fp32: one token at a time): every remainder of
    the 4-row x 6-token register block, rows past a panel, K off the 64-weight group, against the reference."""
    g = torch.Generator().manual_seed(2)
    for tokens, k, n in [(2, 31, 3), (5, 100, 7), (7, 129, 66), (13, 64, 5), (40, 300, 9), (97, 1000, 70)]:
        w, bias = torch.randn((n, k), generator=g), torch.randn(n, generator=g)
        x = torch.randn((tokens, k), generator=g).to(dtype)
        qw = quantise(w, "q4")
        assert_close_to_largest(cpu_quant.linear(lib, x, qw, bias, tile=8), reference_linear(x, qw, bias), dtype)


def test_q4_gemm_is_the_long_chunk_path_in_another_order(lib) -> None:
    """The panel GEMM multiplies the very bf16 weights expand_linear's GEMM multiplies (d * q + m, rounded
    once), so the two differ only by summation order: far below the tolerance against the fp32 reference."""
    if not cpu_quant.q4_vectorised(lib):
        pytest.skip("the panel GEMM is AVX512_BF16 code; here q4 steps take the exact weights one token at a time")
    g = torch.Generator().manual_seed(3)
    qw = quantise(torch.randn((90, 333), generator=g), "q4")
    x = torch.randn((23, 333), generator=g).to(torch.bfloat16)
    gemm = cpu_quant.linear(lib, x, qw, None, tile=8).float()
    expanded = cpu_quant.expand_linear(lib, x, qw, None).float()
    assert (gemm - expanded).abs().max().item() <= 2e-3 * expanded.abs().max().item()


def test_plan_is_measured_from_the_cpu(lib) -> None:
    info = cpu_info()
    assert info.logical_cpus >= 1 and info.model
    plan = measure_plan(lib, info, k=64)
    assert plan.tile in cpu_quant.TILES and set(plan.tile_ms) == {str(t) for t in cpu_quant.TILES}
    assert plan.prefill_tokens >= 1 and plan.prefill_ms


def _on_grid(n: int, k: int, g: torch.Generator) -> torch.Tensor:
    levels = torch.randint(0, 16, (n, k // BLOCK, BLOCK), generator=g)
    levels[..., 0], levels[..., 1] = 0, 15
    d = torch.rand((n, k // BLOCK, 1), generator=g).half().float() * 0.01
    return (levels * d - 0.05).view(n, k)


def test_q4_keeps_off_grid_linears_of_a_4bit_model_at_int8(tmp_path) -> None:
    from torch import nn

    from ragsvc.serving.layers.quant_linear import quantise_linears
    from ragsvc.serving.quant_cache import QuantCache

    g = torch.Generator().manual_seed(4)
    model = nn.Module()
    for i in range(3):
        layer = nn.Linear(64, 32, bias=False)
        layer.weight.data = _on_grid(32, 64, g)
        model.add_module(f"grid{i}", layer)
    model.add_module("fine", nn.Linear(64, 32, bias=False))  # random floats: what a Q6_K tensor looks like
    cache = QuantCache(tmp_path / "q.safetensors")
    quantise_linears(model, "q4", quantiser=cache)
    formats = {name: m.qw.fmt for name, m in model.named_children() if isinstance(m, QuantLinear)}
    assert formats == {"grid0": "q4", "grid1": "q4", "grid2": "q4", "fine": "int8"}
    cache.save()
    reread = QuantCache(tmp_path / "q.safetensors")
    assert [reread.format_of(n) for n in formats] == ["q4", "q4", "q4", "int8"]


def test_q4_of_a_float_model_is_all_q4() -> None:
    from torch import nn

    from ragsvc.serving.layers.quant_linear import linear_bytes, quantise_linears

    model = nn.Module()
    for i in range(3):
        model.add_module(f"l{i}", nn.Linear(64, 32))
    assert linear_bytes(model, element_size=2) == 3 * 32 * 64 * 2
    quantise_linears(model, "q4")
    assert {m.qw.fmt for m in model.children() if isinstance(m, QuantLinear)} == {"q4"}
    assert linear_bytes(model, element_size=2) == 3 * (32 * 64 // 2 + 2 * 32 * 2 * 2)  # nibbles + fp16 d, m


@pytest.mark.parametrize("march", ["x86-64-v2", "x86-64-v3", "skylake-avx512"])
def test_kernels_built_for_older_cpus_agree(tmp_path, march) -> None:
    """The same source built for CPUs without AVX512_BF16 (AVX-512F, or AVX2: int8 vectorised, q4 scalar) and
    with neither (scalar paths): same results, so the library is right wherever -march=native lands."""
    lib = build_for_march(tmp_path, "cpu_quant.cpp", march, cpu_quant._SIGNATURES)
    assert not cpu_quant.q4_vectorised(lib)
    g = torch.Generator().manual_seed(1)
    for fmt in ("int8", "q4"):
        for dtype in (torch.float32, torch.bfloat16):
            for tokens, k, n in SHAPES:
                w, bias = torch.randn((n, k), generator=g), torch.randn(n, generator=g)
                x = torch.randn((tokens, k), generator=g).to(dtype)
                qw = quantise(w, fmt)
                got = cpu_quant.linear(lib, x, qw, bias, tile=4)
                assert_close_to_largest(got, reference_linear(x, qw, bias), dtype)


@pytest.mark.parametrize("fmt", ["int8", "q4"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_expansion_in_row_tiles_matches_one_whole_expansion(lib, fmt, dtype, monkeypatch) -> None:
    """The long-chunk path expands a tile of rows at a time into a reused buffer: every tile size (one row tile,
    several with a short last one) gives what expanding the whole weight once and one F.linear give, up to the
    GEMM's summation order (it blocks a 150-row and a 40-row product differently)."""
    g = torch.Generator().manual_seed(1)
    w, bias = torch.randn((150, 100), generator=g), torch.randn(150, generator=g).to(dtype)
    qw = quantise(w, fmt)
    x = torch.randn((20, 100), generator=g).to(dtype)
    xs = x.to(torch.bfloat16).to(dtype) if fmt == "q4" else x  # q4 multiplies bf16-rounded activations
    whole = torch.nn.functional.linear(xs, cpu_quant.dequantise(lib, qw, dtype), bias)
    for tile_bytes in (1 << 22, 40 * 100 * x.element_size(), 1):
        monkeypatch.setattr(cpu_quant, "EXPAND_TILE_BYTES", tile_bytes)
        assert_close_to_largest(cpu_quant.expand_linear(lib, x, qw, bias), whole, dtype)
        assert_close_to_largest(cpu_quant.expand_linear(lib, x, qw, None), whole - bias, dtype)


@pytest.mark.parametrize("fmt", ["int8", "q4"])
def test_quantising_in_row_chunks_equals_quantising_whole(fmt, monkeypatch) -> None:
    """Large weights are quantised a bounded number of rows at a time (memory); rows are independent, so the
    result is the same bytes, scales and offsets, including a short last chunk."""
    from ragsvc.serving.layers import quant

    w = torch.randn((70, 100), generator=torch.Generator().manual_seed(4))
    whole = quantise(w, fmt)
    monkeypatch.setattr(quant, "QUANTISE_ROWS", 16)
    chunked = quantise(w, fmt)
    assert torch.equal(chunked.data, whole.data) and torch.equal(chunked.scale, whole.scale)
    assert (chunked.offset is None) == (whole.offset is None)
    assert chunked.offset is None or torch.equal(chunked.offset, whole.offset)
