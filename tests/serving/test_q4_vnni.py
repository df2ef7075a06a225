"""The int8-activation q4 kernel (cpu_q4_vnni) against its plain-torch form and against de-quantise-then-matmul,
with odd shapes: K off the 32-block and the 64-weight group, N off the kernel's 16-row vectors, 1 to 70 tokens
(every remainder of its register block); the scalar build for CPUs without AVX512_VNNI; and the dispatch."""

from __future__ import annotations

import pytest
import torch

from ragsvc.serving.layers import cpu_q4_vnni, cpu_quant
from ragsvc.serving.layers.cpu_tuning import KERNEL_CANDIDATES, QuantPlan, _window, cpu_info, measure_plan
from ragsvc.serving.layers.quant import BLOCK, dequantise, quantise
from ragsvc.serving.layers.quant_linear import QuantLinear
from tests.serving.kernel_builds import build_for_march
from tests.serving.kernel_closeness import assert_close_to_largest

SHAPES = [(1, 1, 3), (2, 31, 17), (3, 33, 5), (4, 70, 40), (7, 100, 33), (13, 600, 70), (70, 1000, 9), (5, 64, 16),
          (40, 129, 48), (16, 65, 20), (17, 96, 31), (9, 40, 50)]
"""(tokens, in, out); up to 16 tokens take the AVX-512 form's direct path (tiles of 8: 9 and 13 make two, 16
two full ones), up to 4 the AVX2 form's; more tokens the panel."""


@pytest.fixture(scope="module")
def lib():
    built = cpu_q4_vnni.load()
    if built is None:
        pytest.skip("no C++ compiler: the kernel cannot be built here")
    return built


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernel_matches_its_torch_form(lib, dtype) -> None:
    g = torch.Generator().manual_seed(0)
    for tokens, k, n in SHAPES:
        w, bias = torch.randn((n, k), generator=g), torch.randn(n, generator=g)
        x = torch.randn((tokens, k), generator=g).to(dtype)
        qw = quantise(w, "q4")
        vw = cpu_q4_vnni.pack(lib, qw)
        assert_close_to_largest(cpu_q4_vnni.linear(lib, x, vw, bias), cpu_q4_vnni.reference_linear(x, qw, bias), dtype)
        assert_close_to_largest(cpu_q4_vnni.linear(lib, x, vw, None), cpu_q4_vnni.reference_linear(x, qw, None), dtype)


def test_direct_and_panel_paths_give_the_same_bits(lib) -> None:
    """A token's outputs do not depend on how many tokens share the call: the direct path (few tokens, straight
    from the packed weight, in tiles) and the panel path sum the same integers and take the same fp32 steps."""
    g = torch.Generator().manual_seed(4)
    w, bias = torch.randn((70, 600), generator=g), torch.randn(70, generator=g)
    x = torch.randn((40, 600), generator=g).to(torch.bfloat16)
    vw = cpu_q4_vnni.pack(lib, quantise(w, "q4"))
    whole = cpu_q4_vnni.linear(lib, x, vw, bias)  # panel
    for lo, hi in [(0, 1), (3, 14), (20, 36), (39, 40)]:
        assert torch.equal(cpu_q4_vnni.linear(lib, x[lo:hi], vw, bias), whole[lo:hi])


def test_error_against_float_activations_is_within_half_a_step_per_block(lib) -> None:
    """Against de-quantise-then-matmul with the fp32 activations, each output is off by at most what rounding
    every activation to half a step of its own 32-block's range can do, sum_k |w_k| * max|x_block(k)| / 254
    (plus fp32 round-off), with an outlier channel in the activations too: its block-local scale leaves the
    other blocks' steps as they were."""
    g = torch.Generator().manual_seed(1)
    for tokens, k, n in [(9, 100, 33), (64, 1000, 40), (3, 2000, 17)]:
        w = torch.randn((n, k), generator=g)
        x = torch.randn((tokens, k), generator=g)
        x[:, 5] *= 200.0  # one outlier channel, as LLM activations have
        qw = quantise(w, "q4")
        wf = dequantise(qw)  # (out, in)
        got = cpu_q4_vnni.linear(lib, x, cpu_q4_vnni.pack(lib, qw), None)
        exact = x @ wf.T  # (tokens, out)
        kb = -(-k // BLOCK) * BLOCK
        xb = torch.zeros((tokens, kb))
        xb[:, :k] = x
        step = xb.view(tokens, -1, BLOCK).abs().amax(dim=2) / 127  # (tokens, blocks)
        half_step = step.repeat_interleave(BLOCK, dim=1)[:, :k] / 2  # (tokens, in)
        bound = half_step @ wf.abs().T + 1e-5 * (x.abs() @ wf.abs().T)  # (tokens, out)
        assert bool(((got - exact).abs() <= bound).all())
        # and a real check, not a vacuous one: the bound is tight to within a few x on average
        assert (got - exact).abs().mean() > 0.01 * bound.mean()


def test_bad_inputs_are_refused(lib) -> None:
    qw = cpu_q4_vnni.pack(lib, quantise(torch.randn((4, 64)), "q4"))
    with pytest.raises(ValueError, match="expects 64"):
        cpu_q4_vnni.linear(lib, torch.randn((2, 63)), qw, None)
    with pytest.raises(ValueError, match="q4 weights"):
        cpu_q4_vnni.pack(lib, quantise(torch.randn((4, 64)), "int8"))
    with pytest.raises(ValueError, match="fp32 or bf16"):
        cpu_q4_vnni.linear(lib, torch.randn((2, 64), dtype=torch.float16), qw, None)
    assert cpu_q4_vnni.linear(lib, torch.randn((0, 64)), qw, None).shape == (0, 4)


@pytest.mark.parametrize("bias", [torch.zeros(3), torch.zeros(4, dtype=torch.bfloat16)])
def test_a_bias_the_kernel_would_misread_is_refused(lib, int8_lib, bias) -> None:
    """The kernels read `out_features` fp32 values from the bias pointer unchecked: a short or bf16 bias would
    be read past its end or as the wrong type."""
    q4 = cpu_q4_vnni.pack(lib, quantise(torch.randn((4, 64)), "q4"))
    with pytest.raises(ValueError, match="bias must be fp32 with 4 values"):
        cpu_q4_vnni.linear(lib, torch.randn((2, 64)), q4, bias)
    i8 = cpu_q4_vnni.pack_int8(int8_lib, quantise(torch.randn((4, 64)), "int8"))
    with pytest.raises(ValueError, match="bias must be fp32 with 4 values"):
        cpu_q4_vnni.linear_int8(int8_lib, torch.randn((2, 64)), i8, bias)


def test_dispatch_follows_the_plan(lib) -> None:
    """QuantLinear takes the int8-activation kernel from the plan's token count up (q4 only); below it, and with
    the threshold at 0, the bf16 kernels."""
    quant = cpu_quant.load()
    if quant is None:
        pytest.skip("no C++ compiler")
    g = torch.Generator().manual_seed(2)
    w, bias = torch.randn((40, 100), generator=g), torch.randn(40, generator=g)
    layer = QuantLinear(quantise(w, "q4"), bias)
    plan = QuantPlan(tile=4, prefill_tokens=64, tile_ms={}, prefill_ms={}, vnni_tokens=4)
    layer.use_kernels(quant, plan)
    for tokens in (2, 4, 9):
        x = torch.randn((tokens, 100), generator=g).to(torch.bfloat16)
        vnni = cpu_q4_vnni.linear(lib, x, cpu_q4_vnni.pack(lib, layer.qw), layer.bias_f32)
        bf16 = cpu_quant.linear(quant, x, layer.qw, layer.bias_f32, tile=4)
        assert torch.equal(layer(x), vnni if tokens >= 4 else bf16)
    layer.use_kernels(quant, QuantPlan(tile=4, prefill_tokens=64, tile_ms={}, prefill_ms={}, vnni_tokens=1,
                                       vnni_until=8))
    for tokens in (1, 8, 9):  # a window: past vnni_until the bf16 kernels again
        x = torch.randn((tokens, 100), generator=g).to(torch.bfloat16)
        vnni = cpu_q4_vnni.linear(lib, x, cpu_q4_vnni.pack(lib, layer.qw), layer.bias_f32)
        bf16 = cpu_quant.linear(quant, x, layer.qw, layer.bias_f32, tile=4)
        assert torch.equal(layer(x), vnni if tokens <= 8 else bf16)
        assert not torch.equal(vnni, bf16)  # so the check above can tell them apart
    layer.use_kernels(quant, QuantPlan(tile=4, prefill_tokens=64, tile_ms={}, prefill_ms={}))
    x = torch.randn((9, 100), generator=g).to(torch.bfloat16)
    assert torch.equal(layer(x), cpu_quant.linear(quant, x, layer.qw, layer.bias_f32, tile=4))
    layer.use_kernels(quant, QuantPlan(tile=4, prefill_tokens=64, tile_ms={}, prefill_ms={}, vnni_tokens=1))
    x = torch.randn((1, 100), generator=g).to(torch.bfloat16)
    assert torch.equal(layer(x), cpu_q4_vnni.linear(lib, x, cpu_q4_vnni.pack(lib, layer.qw), layer.bias_f32))
    int8_layer = QuantLinear(quantise(w, "int8"), bias)
    int8_layer.use_kernels(quant, plan)
    assert torch.equal(int8_layer(x), cpu_quant.linear(quant, x, int8_layer.qw, int8_layer.bias_f32, tile=4))


def test_plan_measures_the_int8_activation_kernel(lib) -> None:
    quant = cpu_quant.load()
    if quant is None or not cpu_q4_vnni.vectorised(lib):
        pytest.skip("needs the kernels and their vector form (AVX512_VNNI or AVX2)")
    plan = measure_plan(quant, cpu_info(), k=64)
    if cpu_quant.q4_vectorised(quant):
        assert set(plan.vnni_ms) == {str(m) for m in KERNEL_CANDIDATES}
        assert plan.vnni_tokens == 0 or str(plan.vnni_tokens) in plan.vnni_ms
        assert plan.vnni_until == 0 or plan.vnni_tokens <= plan.vnni_until and str(plan.vnni_until) in plan.vnni_ms
        assert (plan.vnni_tokens, plan.vnni_until) == _window(plan.vnni_ms)
    else:  # AVX2: the q4 kernel is a scalar loop, and the int8-activation kernel takes every q4 step untimed
        assert plan.vnni_tokens == 1 and plan.vnni_ms == {}


@pytest.mark.parametrize(("march", "vector"), [("x86-64-v2", False), ("x86-64-v3", True), ("skylake-avx512", True)])
def test_builds_for_older_cpus_agree(tmp_path, march, vector) -> None:
    """Built for a CPU without AVX512_VNNI the library packs and computes the same sums: with vpmaddubsw where
    there is AVX2 (Haswell to Skylake, Zen 2 and 3), in scalar loops without it (and reports that it is not
    vectorised, so the plan keeps the bf16 kernels)."""
    built = build_for_march(tmp_path, "cpu_q4_vnni.cpp", march, cpu_q4_vnni._SIGNATURES)
    assert cpu_q4_vnni.vectorised(built) == vector
    assert cpu_q4_vnni.int8_limit(built) == 0  # the int8-weight form is AVX512_VNNI only
    g = torch.Generator().manual_seed(3)
    for tokens, k, n in SHAPES:
        w, bias = torch.randn((n, k), generator=g), torch.randn(n, generator=g)
        x = torch.randn((tokens, k), generator=g)
        qw = quantise(w, "q4")
        got = cpu_q4_vnni.linear(built, x, cpu_q4_vnni.pack(built, qw), bias)
        assert_close_to_largest(got, cpu_q4_vnni.reference_linear(x, qw, bias), torch.float32)


def _times(wins: set[int]) -> dict[str, list[float]]:
    """Token count -> [other path, candidate], the candidate faster exactly at `wins`."""
    return {str(m): [2.0, 1.0] if m in wins else [1.0, 2.0] for m in KERNEL_CANDIDATES}


@pytest.mark.parametrize(("wins", "window"), [
    (set(), (0, 0)),
    (set(KERNEL_CANDIDATES), (1, 0)),
    ({1, 2, 4, 8, 16, 32, 64, 128}, (1, 128)),  # one loss at the longest step no longer costs decode its kernel
    ({8, 16, 32, 64, 128, 256}, (8, 0)),
    ({1, 2, 16, 32, 64}, (16, 64)),  # the longest run
    ({1, 2, 32, 64}, (1, 2)),  # of equal runs, the one with fewer tokens
    ({256}, (256, 0)),
    ({1}, (1, 1)),
])
def test_window_is_the_longest_run_of_wins(wins, window) -> None:
    assert _window(_times(wins)) == window


@pytest.fixture(scope="module")
def int8_lib(lib):
    if cpu_q4_vnni.int8_limit(lib) == 0:
        pytest.skip("the int8-weight form needs AVX512_VNNI")
    return lib


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_weight_form_matches_its_torch_form(int8_lib, dtype) -> None:
    """int8 weights x int8-rounded activations against the plain-torch form (the same rounding of the
    activations, the de-quantised weight, fp32 sums): odd K and N, 1 to 16 tokens (tiles of 8 with remainders)."""
    g = torch.Generator().manual_seed(9)
    for tokens, k, n in [(1, 1, 3), (2, 31, 17), (3, 100, 33), (8, 64, 16), (9, 600, 70), (16, 129, 48)]:
        w, bias = torch.randn((n, k), generator=g), torch.randn(n, generator=g)
        x = torch.randn((tokens, k), generator=g).to(dtype)
        qw = quantise(w, "int8")
        packed = cpu_q4_vnni.pack_int8(int8_lib, qw)
        for b in (bias, None):
            assert_close_to_largest(cpu_q4_vnni.linear_int8(int8_lib, x, packed, b),
                                    cpu_q4_vnni.reference_linear(x, qw, b), dtype)


def test_int8_weight_form_refuses_what_it_cannot_take(int8_lib) -> None:
    qw = quantise(torch.randn((4, 64)), "int8")
    packed = cpu_q4_vnni.pack_int8(int8_lib, qw)
    limit = cpu_q4_vnni.int8_limit(int8_lib)
    with pytest.raises(ValueError, match=f"at most {limit} tokens"):
        cpu_q4_vnni.linear_int8(int8_lib, torch.randn((limit + 1, 64)), packed, None)
    with pytest.raises(ValueError, match="expects 64"):
        cpu_q4_vnni.linear_int8(int8_lib, torch.randn((2, 63)), packed, None)
    with pytest.raises(ValueError, match="int8 weights"):
        cpu_q4_vnni.pack_int8(int8_lib, quantise(torch.randn((4, 64)), "q4"))


def test_int8_dispatch_follows_the_plan_window(int8_lib) -> None:
    quant = cpu_quant.load()
    if quant is None:
        pytest.skip("no C++ compiler")
    g = torch.Generator().manual_seed(10)
    w, bias = torch.randn((40, 100), generator=g), torch.randn(40, generator=g)
    layer = QuantLinear(quantise(w, "int8"), bias)
    layer.use_kernels(quant, QuantPlan(tile=4, prefill_tokens=64, tile_ms={}, prefill_ms={}, i8_tokens=2,
                                       i8_until=4))
    packed = cpu_q4_vnni.pack_int8(int8_lib, layer.qw)
    for tokens in (1, 2, 4, 5):
        x = torch.randn((tokens, 100), generator=g).to(torch.bfloat16)
        form = cpu_q4_vnni.linear_int8(int8_lib, x, packed, layer.bias_f32)
        fused = cpu_quant.linear(quant, x, layer.qw, layer.bias_f32, tile=4)
        assert not torch.equal(form, fused)  # so the check below can tell them apart
        assert torch.equal(layer(x), form if 2 <= tokens <= 4 else fused)


def test_plan_measures_the_int8_weight_form(int8_lib) -> None:
    quant = cpu_quant.load()
    if quant is None:
        pytest.skip("no C++ compiler")
    plan = measure_plan(quant, cpu_info(), k=64)
    counts = tuple(m for m in KERNEL_CANDIDATES if m <= cpu_q4_vnni.int8_limit(int8_lib))
    assert set(plan.i8_ms) == {str(m) for m in counts}
    first, last = _window(plan.i8_ms, counts)
    assert plan.i8_tokens == first
    assert plan.i8_until == (0 if first == 0 else last or counts[-1])
