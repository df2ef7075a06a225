"""Triton paged-attention decode kernel (the GPU path); the torch `decode_attention` is its reference.

One program per (sequence, kv head) handles all query heads of that group together (GQA), walks the
sequence's block table block by block and keeps an online softmax (running max, running sum, accumulator),
so no K/V is ever gathered into a contiguous copy. float32 caches multiply in full fp32 ("ieee"): Triton's
default for them, TF32, keeps 10 mantissa bits and would make the float32 engine, the exactness reference,
differ from HF at 1e-3. Checked against the torch path on CPU with
TRITON_INTERPRET=1 (tests/serving/test_triton_kernel.py).

Triton is optional (the `gpu` extra); importing this module without it raises ImportError, and the model
only calls it for CUDA tensors.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _paged_decode_kernel(
    q_ptr,
    k_cache_ptr,
    v_cache_ptr,
    block_tables_ptr,
    context_lens_ptr,
    out_ptr,
    scale,
    stride_q_seq,
    stride_q_head,
    stride_kc_block,
    stride_kc_slot,
    stride_kc_head,
    stride_bt_seq,
    stride_o_seq,
    stride_o_head,
    GROUP: tl.constexpr,
    GROUP_PAD: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    HEAD_PAD: tl.constexpr,
    PRECISION: tl.constexpr,
):
    seq = tl.program_id(0)
    kv_head = tl.program_id(1)
    context_len = tl.load(context_lens_ptr + seq)

    g = tl.arange(0, GROUP_PAD)  # query heads of this group (padded for tl.dot's minimum tile)
    d = tl.arange(0, HEAD_PAD)  # a power of two, as tl.arange needs; lanes from HEAD_DIM on are masked
    s = tl.arange(0, BLOCK_SIZE)
    g_mask = g < GROUP
    d_mask = d < HEAD_DIM
    q_offsets = seq * stride_q_seq + (kv_head * GROUP + g)[:, None] * stride_q_head + d[None, :]
    q = tl.load(q_ptr + q_offsets, mask=g_mask[:, None] & d_mask[None, :], other=0.0)  # (GROUP_PAD, HEAD_PAD)

    m_i = tl.full((GROUP_PAD,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((GROUP_PAD,), dtype=tl.float32)
    acc = tl.zeros((GROUP_PAD, HEAD_PAD), dtype=tl.float32)
    num_blocks = tl.cdiv(context_len, BLOCK_SIZE)
    for j in range(0, num_blocks):
        block = tl.load(block_tables_ptr + seq * stride_bt_seq + j).to(tl.int64)
        kv_offsets = block * stride_kc_block + s[:, None] * stride_kc_slot + kv_head * stride_kc_head + d[None, :]
        k = tl.load(k_cache_ptr + kv_offsets, mask=d_mask[None, :], other=0.0)  # (BLOCK_SIZE, HEAD_PAD)
        v = tl.load(v_cache_ptr + kv_offsets, mask=d_mask[None, :], other=0.0)
        scores = tl.dot(q, tl.trans(k), input_precision=PRECISION).to(tl.float32) * scale  # (GROUP_PAD, BLOCK_SIZE)
        valid = (j * BLOCK_SIZE + s) < context_len
        scores = tl.where(valid[None, :], scores, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(scores, axis=1))
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(scores - m_new[:, None])  # (GROUP_PAD, BLOCK_SIZE)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION).to(tl.float32)
        m_i = m_new

    out = acc / l_i[:, None]
    o_offsets = seq * stride_o_seq + (kv_head * GROUP + g)[:, None] * stride_o_head + d[None, :]
    tl.store(out_ptr + o_offsets, out.to(out_ptr.dtype.element_ty), mask=g_mask[:, None] & d_mask[None, :])


def paged_decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    *,
    scale: float,
) -> torch.Tensor:
    """q: (seqs, heads, head_dim); caches: (num_blocks, block_size, kv_heads, head_dim);
    block_tables: (seqs, max_blocks) int32; context_lens: (seqs,) int32 -> (seqs, heads, head_dim)."""
    num_seqs, num_heads, head_dim = q.shape
    _, block_size, num_kv_heads, _ = k_cache.shape
    group = num_heads // num_kv_heads
    q = q.contiguous()
    out = torch.empty_like(q)
    _paged_decode_kernel[(num_seqs, num_kv_heads)](
        q,
        k_cache,
        v_cache,
        block_tables,
        context_lens,
        out,
        scale,
        q.stride(0),
        q.stride(1),
        k_cache.stride(0),
        k_cache.stride(1),
        k_cache.stride(2),
        block_tables.stride(0),
        out.stride(0),
        out.stride(1),
        GROUP=group,
        GROUP_PAD=max(16, triton.next_power_of_2(group)),
        BLOCK_SIZE=block_size,
        HEAD_DIM=head_dim,
        HEAD_PAD=max(16, triton.next_power_of_2(head_dim)),
        PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
    )
    return out
