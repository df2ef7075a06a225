"""The C++ paged decode kernel against the plain-torch reference (`decode_attention`), and the engine on both
paths against HF."""

from __future__ import annotations

import pytest
import torch

from ragsvc.serving.layers import cpu_paged_attention
from ragsvc.serving.layers.attention import decode_attention


@pytest.fixture(scope="module")
def lib():
    loaded = cpu_paged_attention.load()
    if loaded is None:
        pytest.skip("no C++ compiler here: the engine falls back to the torch path")
    return loaded


def _case(*, dtype: torch.dtype, head_dim: int, heads: int, kv_heads: int, lens: list[int], seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    block_size = 16
    need = [(n + block_size - 1) // block_size for n in lens]
    num_blocks = sum(need) + 3
    k_cache = torch.randn(num_blocks, block_size, kv_heads, head_dim, generator=g).to(dtype)
    v_cache = torch.randn(num_blocks, block_size, kv_heads, head_dim, generator=g).to(dtype)
    # q as the model hands it over: a strided view of a wider (tokens, heads + kv_heads, head_dim) tensor
    q = torch.randn(len(lens), heads + kv_heads, head_dim, generator=g).to(dtype)[:, :heads]
    perm = torch.randperm(num_blocks, generator=g).tolist()  # scattered, non-contiguous blocks
    tables, at = [], 0
    for n in need:
        tables.append(perm[at : at + n] + [0] * (max(need) - n))
        at += n
    block_tables = torch.tensor(tables, dtype=torch.int32)  # (decodes, max_blocks)
    pos = torch.arange(max(need) * block_size)
    mask = pos[None, :] < torch.tensor(lens)[:, None]  # (decodes, max_context)
    scale = head_dim**-0.5
    ref = decode_attention(q, k_cache, v_cache, block_tables.long(), mask[:, None, None, :], scale=scale)
    return (q, k_cache, v_cache, block_tables, torch.tensor(lens, dtype=torch.int32), scale), ref


@pytest.mark.parametrize(
    ("head_dim", "heads", "kv_heads"),
    [(64, 9, 3), (128, 4, 4), (24, 6, 2)],  # SmolLM2; no GQA; a head_dim off the AVX-512 path
)
def test_kernel_matches_reference_fp32(lib, head_dim, heads, kv_heads) -> None:
    args, ref = _case(
        dtype=torch.float32, head_dim=head_dim, heads=heads, kv_heads=kv_heads, lens=[1, 15, 16, 17, 40, 300]
    )
    out = cpu_paged_attention.paged_decode_attention(lib, *args[:5], scale=args[5])
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("head_dim", "heads", "kv_heads"),
    [(64, 9, 3), (64, 12, 3), (128, 4, 2), (128, 8, 1)],  # SmolLM2; groups of 4; head_dim 128; a group of 8
)
def test_kernel_matches_reference_bf16(lib, head_dim, heads, kv_heads) -> None:
    # odd lengths end on a token whose P.V pair is half padding (the bf16 P.V path)
    args, ref = _case(dtype=torch.bfloat16, head_dim=head_dim, heads=heads, kv_heads=kv_heads,
                      lens=[1, 33, 250, 700], seed=3)
    out = cpu_paged_attention.paged_decode_attention(lib, *args[:5], scale=args[5])
    assert out.dtype == torch.bfloat16
    # both accumulate in fp32 and round once to bf16: at most an ulp or two apart
    torch.testing.assert_close(out.float(), ref.float(), atol=2e-2, rtol=1e-2)


def test_large_scores_do_not_overflow(lib) -> None:
    args, _ = _case(dtype=torch.float32, head_dim=64, heads=9, kv_heads=3, lens=[5, 80])
    q, k_cache, v_cache, tables, lens, scale = args
    q = q * 1000  # scores in the thousands: the softmax must subtract the max first
    pos = torch.arange(tables.shape[1] * 16)
    mask = (pos[None, :] < lens.long()[:, None])[:, None, None, :]
    ref = decode_attention(q, k_cache, v_cache, tables.long(), mask, scale=scale)
    out = cpu_paged_attention.paged_decode_attention(lib, q, k_cache, v_cache, tables, lens, scale=scale)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=0)


def test_engine_uses_the_kernel_and_both_paths_give_the_same_tokens(lib, tiny_llama) -> None:
    from ragsvc.serving.config import EngineConfig
    from ragsvc.serving.engine import LLMEngine
    from ragsvc.serving.sampling_params import SamplingParams

    folder, _ = tiny_llama
    g = torch.Generator().manual_seed(4)
    prompts = [torch.randint(3, 500, (n,), generator=g).tolist() for n in (3, 19, 40, 7)]
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    outs = {}
    for kernel in (True, False):
        engine = LLMEngine.from_config(
            EngineConfig(model=str(folder), dtype="float32", block_size=4, num_kv_blocks=128, cpu_kernels=kernel)
        )
        assert engine.runner.paged_decode is kernel
        outs[kernel] = [o.output_token_ids for o in engine.generate(prompts, params)]
    assert outs[True] == outs[False]


def test_without_a_compiler_there_is_no_kernel(monkeypatch) -> None:
    monkeypatch.setenv("CXX", "no-such-compiler-for-ragsvc")
    assert cpu_paged_attention.load.__wrapped__() is None  # the engine then takes the torch path
