"""The fused CPU kernels (RMSNorm + residual, SiLU-and-multiply, rotary) against the torch code they replace."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ragsvc.serving.layers import cpu_fused
from ragsvc.serving.layers.norm import RMSNorm
from ragsvc.serving.layers.rotary import RotaryEmbedding, apply_rotary, rope_inv_freq


@pytest.fixture(scope="module")
def lib():
    loaded = cpu_fused.load()
    if loaded is None:
        pytest.skip("no C++ compiler here: the model keeps its torch path")
    return loaded


def _close(ours: torch.Tensor, ref: torch.Tensor) -> None:
    if ref.dtype == torch.bfloat16:  # a different summation order may move a value by one bf16 ulp
        torch.testing.assert_close(ours.float(), ref.float(), atol=1e-2, rtol=1.6e-2)
    else:
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 7, 300])  # 300 x 576 crosses the threshold where OpenMP splits rows
def test_rms_norm_with_and_without_residual(lib, dtype, rows) -> None:
    g = torch.Generator().manual_seed(rows)
    norm = RMSNorm(576, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(576, generator=g) + 0.5)
    norm = norm.to(dtype)
    x = (torch.randn(rows, 576, generator=g) * 3).to(dtype)
    residual = torch.randn(rows, 576, generator=g).to(dtype)
    with torch.no_grad():
        ref_plain = norm(x)
        ref_normed, ref_sum = norm.forward_residual(x, residual)
    plain, none = cpu_fused.rms_norm(lib, x, norm.weight, norm.eps)
    normed, summed = cpu_fused.rms_norm(lib, x, norm.weight, norm.eps, residual)
    assert none is None and summed is not None
    _close(plain, ref_plain)
    _close(normed, ref_normed)
    assert torch.equal(summed, ref_sum)  # one rounded add: bit-identical


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_silu_mul(lib, dtype) -> None:
    g = torch.Generator().manual_seed(1)
    gate_up = (torch.randn(50, 2 * 1536, generator=g) * 6).to(dtype)
    gate_up[0, :4] = torch.tensor([-200.0, -88.0, 0.0, 200.0])  # far tails: no inf / nan
    gate, up = gate_up.split(1536, dim=-1)
    ref = F.silu(gate) * up
    out = cpu_fused.silu_mul(lib, gate_up)
    assert torch.isfinite(out).all()
    _close(out, ref)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rotary_on_a_strided_view(lib, dtype) -> None:
    from transformers import LlamaConfig

    cfg = LlamaConfig(hidden_size=576, num_attention_heads=9, num_key_value_heads=3, head_dim=64)
    inv_freq, scaling = rope_inv_freq(cfg)
    rotary = RotaryEmbedding(inv_freq, max_positions=2048, scaling=scaling)
    g = torch.Generator().manual_seed(2)
    qkv = torch.randn(40, 15 * 64, generator=g).to(dtype)  # (tokens, (heads + 2 kv_heads) * head_dim)
    qk = qkv[:, : 12 * 64].view(40, 12, 64)  # strided rows, as the attention layer hands them over
    positions = torch.randint(0, 2048, (40,), generator=g)
    cos, sin = rotary.lookup(positions, dtype)
    _close(cpu_fused.rotary(lib, qk, cos, sin), apply_rotary(qk, (cos, sin)))


def test_runner_wires_the_kernels_only_when_asked(lib, tiny_llama) -> None:
    from ragsvc.serving.config import EngineConfig
    from ragsvc.serving.engine import LLMEngine

    folder, _ = tiny_llama
    runners = [
        LLMEngine.from_config(
            EngineConfig(model=str(folder), dtype="float32", block_size=4, num_kv_blocks=64, cpu_kernels=k)
        ).runner
        for k in (True, False)
    ]
    assert runners[0].model.layers[0].mlp.kernels is lib and runners[1].model.layers[0].mlp.kernels is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_argmax_first_maximum_and_nan(lib, dtype) -> None:
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(5, 49152 + 7, generator=g).to(dtype)  # a tail past the last 16 columns
    logits[1, 100] = logits[1, 40000] = 50.0  # a tie: the first index wins, as in torch
    logits[2, -1] = 60.0  # the maximum in the scalar tail
    logits[3, :] = 0.0  # all equal: index 0
    out = cpu_fused.argmax(lib, logits)
    assert out is not None
    assert torch.equal(out, logits.float().max(dim=-1).indices)
    assert out[1] == 100 and out[3] == 0
    logits[4, 7] = float("nan")
    assert cpu_fused.argmax(lib, logits) is None  # the sampler then falls back to torch
