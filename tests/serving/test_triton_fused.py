"""The Triton RMSNorm, rotary and SiLU-and-multiply kernels against the layers' torch paths, on CPU via
TRITON_INTERPRET=1 (on a GPU, where there is one)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ragsvc.serving.layers.norm import RMSNorm
from ragsvc.serving.layers.rotary import RotaryEmbedding, apply_rotary

from .triton_interpreter import use_interpreter

_LATE = use_interpreter()  # before triton is imported: without a GPU the kernels run interpreted

triton = pytest.importorskip("triton", reason="triton is not installed (the `gpu` extra)")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.bfloat16]
ROUNDS_AS_TORCH = DEVICE == "cuda"
"""Triton's interpreter truncates float32 to bf16 (checked: about half of 1,024 random values differ from torch's
round-to-nearest-even, with or without fp_downcast_rounding="rtne"); compiled kernels round as torch does. So
on a CPU bf16 results are checked to a couple of bf16 steps, on a GPU to torch's bits where the rounding is the
same."""


@pytest.fixture
def fused():
    if _LATE:
        pytest.skip("triton was imported before TRITON_INTERPRET=1 could be set; run this file on its own")
    import ragsvc.serving.layers.triton_fused as module

    return module


def _close(got: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype, *, exact: bool = False) -> None:
    """float32: rounding apart (sums in another order). bf16 compiled: torch's bits where `exact`, else one bf16 step
    apart on a few elements (a sum or an exp that lands on the other side of a rounding). bf16 interpreted: a
    couple of bf16 steps (it truncates)."""
    got, ref = got.cpu().float(), ref.cpu().float()
    assert got.shape == ref.shape
    assert torch.isfinite(got).all()
    scale = ref.abs().max().item()
    if dtype == torch.float32:
        assert (got - ref).abs().max().item() <= 1e-5 * scale
    elif not ROUNDS_AS_TORCH:
        assert (got - ref).abs().max().item() <= 2 ** -6 * scale
    elif exact:
        assert torch.equal(got, ref)
    else:
        assert (got - ref).abs().max().item() <= 2 ** -7 * scale
        assert (got != ref).float().mean().item() <= 0.02


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden", [100, 576])
def test_rms_norm_with_and_without_the_residual(fused, dtype, hidden) -> None:
    g = torch.Generator().manual_seed(hidden)
    norm = RMSNorm(hidden, eps=1e-5)
    norm.weight.data = torch.randn(hidden, generator=g) * 0.5 + 1
    norm = norm.to(dtype)
    # rows of a wider tensor (strided), as the layers hand them over
    x = torch.randn((7, hidden + 12), generator=g).to(dtype)[:, :hidden]
    residual = (torch.randn((7, hidden), generator=g) * 3).to(dtype)
    ref_normed, ref_sum = norm.forward_residual(x, residual)
    normed, summed = fused.rms_norm(x.to(DEVICE), norm.weight.to(DEVICE), norm.eps, residual.to(DEVICE))
    _close(summed, ref_sum, dtype, exact=True)  # one rounded add, as torch's
    _close(normed, ref_normed, dtype)
    plain, none = fused.rms_norm(x.to(DEVICE), norm.weight.to(DEVICE), norm.eps)
    assert none is None
    _close(plain, norm(x), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("heads", "head_dim"), [(9 + 3, 64), (3 + 1, 80), (12 + 2, 128)])
def test_rotary_on_q_and_k_viewed_in_the_qkv_output(fused, dtype, heads, head_dim) -> None:
    g = torch.Generator().manual_seed(head_dim)
    tokens, extra = 5, 2 * head_dim  # v sits after q and k in each row
    rope = RotaryEmbedding(1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim)), max_positions=64)
    qkv = torch.randn((tokens, heads * head_dim + extra), generator=g).to(dtype)
    qk = qkv[:, : heads * head_dim].view(tokens, heads, head_dim)
    positions = torch.tensor([0, 3, 17, 40, 63])
    cos, sin = rope.lookup(positions, dtype)
    ref = apply_rotary(qk, (cos, sin))
    got = fused.rotary(qk.to(DEVICE), cos.to(DEVICE), sin.to(DEVICE))
    # each product rounded, then the sum, as torch does; still, on an H200 a few elements came out one bf16 step
    # from the CPU's reference (why was not found in that lease), so not bit for bit
    _close(got, ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("intermediate", [50, 1536, 2100])
def test_silu_times_up(fused, dtype, intermediate) -> None:
    g = torch.Generator().manual_seed(intermediate)
    gate_up = (torch.randn((3, 2 * intermediate), generator=g) * 4).to(dtype)
    gate, up = gate_up.split(intermediate, dim=-1)
    ref = F.silu(gate) * up
    _close(fused.silu_mul(gate_up.to(DEVICE)), ref, dtype)


def test_no_rows(fused) -> None:
    empty = torch.empty((0, 64), device=DEVICE)
    assert fused.rms_norm(empty, torch.ones(64, device=DEVICE), 1e-5)[0].shape == (0, 64)
    assert fused.silu_mul(torch.empty((0, 128), device=DEVICE)).shape == (0, 64)


@pytest.mark.skipif(DEVICE == "cuda", reason="a CPU model through the interpreter; on a GPU test_cuda_engine checks "
                                             "the engine with and without the kernels")
def test_the_model_through_the_fused_kernels_gives_the_torch_paths_logits(fused, tiny_llama, tiny_qwen2) -> None:
    """The kernels wired into a whole model (strided q/k views, residual chains, the last norm over sampled rows):
    a mixed batch of prompts and decode steps gives the torch path's logits. Run on the CPU, interpreted."""
    from ragsvc.serving.config import EngineConfig
    from ragsvc.serving.engine import LLMEngine
    from tests.serving.test_model_exact import _prompts, _run_collecting_logits

    for folder, _ in (tiny_llama, tiny_qwen2):
        def engine(folder=folder) -> LLMEngine:
            return LLMEngine.from_config(EngineConfig(model=str(folder), dtype="float32", device="cpu",
                                                      cpu_kernels=False, num_kv_blocks=64))

        plain, routed = engine(), engine()
        routed.runner.model.use_gpu_kernels()
        assert sum(getattr(m, "gpu_kernels", None) is fused for m in routed.runner.model.modules()) == 2 * 4 + 1
        prompts = _prompts([5, 17, 1, 33])
        theirs, _ = _run_collecting_logits(plain, prompts, max_tokens=4)
        ours, _ = _run_collecting_logits(routed, prompts, max_tokens=4)
        for rid, steps in theirs.items():
            assert [c for c, _ in ours[rid]] == [c for c, _ in steps]
            for (_, got), (_, ref) in zip(ours[rid], steps, strict=True):
                assert (got - ref).abs().max().item() <= 1e-5 * ref.abs().max().item()
