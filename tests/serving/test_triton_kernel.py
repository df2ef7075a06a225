"""The Triton paged decode kernel against the torch reference path, on CPU via TRITON_INTERPRET=1."""

from __future__ import annotations

import pytest
import torch

from ragsvc.serving.layers.attention import decode_attention

from .triton_interpreter import use_interpreter

_LATE = use_interpreter()  # before triton is imported: without a GPU the kernels run interpreted

triton = pytest.importorskip("triton", reason="triton is not installed (the `gpu` extra)")


@pytest.fixture
def kernel_module():
    if _LATE:
        pytest.skip("triton was imported before TRITON_INTERPRET=1 could be set; run this file on its own")
    import ragsvc.serving.layers.triton_paged_attention as module

    return module


def _case(device: str, *, dtype: torch.dtype, seed: int = 0, head_dim: int = 64):
    g = torch.Generator().manual_seed(seed)
    num_blocks, block_size, kv_heads, heads = 24, 16, 3, 9  # SmolLM2's attention shape (head_dim 64)
    lens = [1, 17, 40, 16, 71]
    k_cache = torch.randn(num_blocks, block_size, kv_heads, head_dim, generator=g).to(device, dtype)
    v_cache = torch.randn(num_blocks, block_size, kv_heads, head_dim, generator=g).to(device, dtype)
    q = torch.randn(len(lens), heads, head_dim, generator=g).to(device, dtype)
    perm = torch.randperm(num_blocks, generator=g).tolist()  # scattered, non-contiguous blocks
    max_blocks = max((n + block_size - 1) // block_size for n in lens)
    tables, at = [], 0
    for n in lens:
        need = (n + block_size - 1) // block_size
        tables.append(perm[at : at + need] + [0] * (max_blocks - need))
        at += need
    block_tables = torch.tensor(tables, dtype=torch.int32, device=device)
    context_lens = torch.tensor(lens, dtype=torch.int32, device=device)
    # Reference inputs for the torch path: block ids and a mask over the padded context.
    pos = torch.arange(max_blocks * block_size, device=device)
    mask = pos[None, :] < context_lens.long()[:, None]
    ref = decode_attention(q, k_cache, v_cache, block_tables.long(), mask[:, None, None, :], scale=head_dim**-0.5)
    return q, k_cache, v_cache, block_tables, context_lens, ref


def test_kernel_matches_torch_reference_fp32(kernel_module) -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    q, kc, vc, bt, lens, ref = _case(device, dtype=torch.float32)
    out = kernel_module.paged_decode_attention(q, kc, vc, bt, lens, scale=64**-0.5)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)  # fp32 multiplies in full precision on a GPU too


@pytest.mark.gpu
def test_kernel_matches_torch_reference_bf16_on_gpu(kernel_module) -> None:
    q, kc, vc, bt, lens, ref = _case("cuda", dtype=torch.bfloat16)
    out = kernel_module.paged_decode_attention(q, kc, vc, bt, lens, scale=64**-0.5)
    torch.testing.assert_close(out.float(), ref.float(), atol=2e-2, rtol=0)


def test_head_dim_that_is_not_a_power_of_two(kernel_module) -> None:
    """Triton's tiles are powers of two: a head of 80 (Phi-2, some tiny test models) runs padded to 128 with
    the extra lanes masked, and gives the reference's numbers."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    q, kc, vc, bt, lens, ref = _case(device, dtype=torch.float32, head_dim=80)
    out = kernel_module.paged_decode_attention(q, kc, vc, bt, lens, scale=80**-0.5)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
