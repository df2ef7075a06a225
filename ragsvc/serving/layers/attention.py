"""Grouped-query attention over the paged KV cache (CPU path in torch; the reference for the GPU kernel).

A step's tokens are packed without padding: first the single-token chunks (decodes), then the multi-token
chunks (prefills, possibly chunked or behind a cached prefix). New K/V are written into the cache by slot,
then:
* decodes read K/V in place from their blocks with a paged kernel: C++ on CPU (cpu_paged_attention.py),
  Triton on CUDA (triton_paged_attention.py). `decode_attention` below is their plain-torch reference (and
  the fallback without a compiler): one batched SDPA over K/V gathered by block table, padded to the longest
  context with a mask; at batch 32 its gather + SDPA cost 3x the step's GEMMs (`ragsvc bench serving`);
* each prefill chunk runs its own attention: a fresh prompt over its just-computed K/V, a chunk behind cached
  context over its context (read in place or gathered). On a CPU with AVX512-BF16 a bf16 chunk goes to the C++
  causal kernel (cpu_prefill_attention.py, which says why); otherwise SDPA, with is_causal for a fresh prompt
  and an offset causal mask behind cached context. One SDPA per sequence rather than one over the packed
  batch with a block-diagonal causal mask: the packed form computes and then discards every cross-sequence
  score, work that grows with the square of the batch's total tokens instead of each prompt's own.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ragsvc.serving.layers import cpu_paged_attention, cpu_prefill_attention

SDPA_ALIGN = 32
"""A fresh prompt's SDPA on the CPU runs over its tokens padded at the end to a multiple of this. torch's CPU
flash attention is much slower at other lengths: SmolLM2's heads (9 of 64, 3 kv), bf16, causal, 2 threads, on
a Xeon with AMX (torch 2.13), 477 tokens took 8.6 ms and 480 1.9; 333 3.9 against 352's 1.05; 250 1.25 against
0.62; 101 0.31 against 0.24 (medians of 3 x 7 calls). Padded to 16 it was a little faster below 170 tokens (equal
at 170) and slower from 300 (301: 1.15 against 0.96); padded to 64, at best 0.01 ms faster than to 32. The
added rows come last, so causally no real row attends to them; they are computed and dropped. A chunk behind
cached context gets its keys padded the same way, masked (77 query rows behind 333 keys: 0.88 -> 0.33 ms; 250
behind 700: 2.27 -> 1.66); padding its query rows as well was no faster. In the profiled serving level at 32
concurrent (`bench decode-profile --serving-requests 32`, four alternating pairs) prefill attention took
2.38-2.63 s against 2.77-2.99; the level's throughput moved less than its run-to-run noise there (the decode
steps, which this does not touch, varied by a third between runs)."""


@dataclass
class PrefillSegment:
    """One multi-token chunk: packed rows [token_start, token_end), context positions [0, context_len)."""

    token_start: int
    token_end: int
    context_len: int
    context_blocks: torch.Tensor | None
    """(ceil(context_len / block_size),) block ids to gather; None for a fresh prompt (no earlier context)."""
    mask: torch.Tensor | None
    """(chunk, context_len) additive mask in the model's dtype, 0 = attend, -inf = not; None with a fresh prompt
    (is_causal instead). Built once per step: a bool mask was converted by SDPA again in every layer."""
    first_block: int | None = None
    """Set when the context's blocks are consecutive ids (a prompt's blocks are allocated together, so a cached
    prefix usually is): the context is then a slice of the cache, read in place instead of gathered."""
    folded_mask: torch.Tensor | None = None
    """`mask` repeated for each query head of a GQA group, (group * chunk, context_len): made by the first
    layer, reused by the others (repeating it in every layer cost more than folding saves)."""


@dataclass
class AttentionMetadata:
    slot_mapping: torch.Tensor
    """(tokens,) flat slot (block * block_size + offset) each new token's K/V is written to."""
    num_decode_tokens: int = 0
    decode_blocks: torch.Tensor | None = None
    """(decodes, max_blocks) block ids of each decode's context, padded with block 0 (masked out)."""
    decode_mask: torch.Tensor | None = None
    """(decodes, 1, 1, max_context) bool, True = a real context position."""
    prefills: list[PrefillSegment] = field(default_factory=list)
    decode_block_tables: torch.Tensor | None = None
    """(decodes, max_blocks) int32 block tables for a paged kernel (Triton on CUDA, C++ on CPU); when set,
    decode_blocks and decode_mask are not."""
    decode_context_lens: torch.Tensor | None = None
    """(decodes,) int32 context lengths for the paged kernel."""
    prefill_kernel: ctypes.CDLL | None = None
    """The C++ causal prefill kernel (cpu_prefill_attention.py) when the runner chose it; prefill segments then
    carry no mask (the kernel derives causality from positions). None = per-segment SDPA."""
    prefill_form: int = 0
    """That kernel's form (cpu_prefill_attention.DPBF16, FMA or AMX: the runner's per-CPU choice)."""


def write_kv(
    k_cache: torch.Tensor, v_cache: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slots: torch.Tensor
) -> None:
    # caches: (num_blocks, block_size, kv_heads, head_dim); k, v: (tokens, kv_heads, head_dim)
    k_cache.view(-1, *k_cache.shape[2:]).index_copy_(0, slots, k)
    v_cache.view(-1, *v_cache.shape[2:]).index_copy_(0, slots, v)


def paged_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    meta: AttentionMetadata,
    *,
    scale: float,
) -> torch.Tensor:
    """q: (tokens, heads, head_dim); k, v: (tokens, kv_heads, head_dim) -> (tokens, heads, head_dim)."""
    write_kv(k_cache, v_cache, k, v, meta.slot_mapping)
    nd = meta.num_decode_tokens
    if nd == q.shape[0]:  # pure decode step: no copy into a shared output
        return _decode(q, k_cache, v_cache, meta, scale=scale)
    out = torch.empty_like(q)
    if nd:
        out[:nd] = _decode(q[:nd], k_cache, v_cache, meta, scale=scale)
    for seg in meta.prefills:
        s, e = seg.token_start, seg.token_end
        if meta.prefill_kernel is not None:
            k_ctx, v_ctx = _prefill_context(k[s:e], v[s:e], k_cache, v_cache, seg)
            cpu_prefill_attention.prefill_attention(meta.prefill_kernel, q[s:e], k_ctx, v_ctx, out[s:e], scale=scale,
                                                    form=meta.prefill_form)
        else:
            out[s:e] = prefill_attention(q[s:e], k[s:e], v[s:e], k_cache, v_cache, seg, scale=scale)
    return out


def _decode(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, meta: AttentionMetadata, *, scale: float
) -> torch.Tensor:
    if meta.decode_block_tables is not None and meta.decode_context_lens is not None:
        tables, lens = meta.decode_block_tables, meta.decode_context_lens
        if q.is_cuda:
            from ragsvc.serving.layers.triton_paged_attention import paged_decode_attention

            return paged_decode_attention(q, k_cache, v_cache, tables, lens, scale=scale)
        lib = cpu_paged_attention.load()
        if lib is None:
            raise RuntimeError("kernel tables were prepared but the CPU attention kernel is not loaded")
        return cpu_paged_attention.paged_decode_attention(lib, q, k_cache, v_cache, tables, lens, scale=scale)
    if meta.decode_blocks is None or meta.decode_mask is None:
        raise RuntimeError("decode tokens without block tables or a gather mask; prepare() set neither")
    return decode_attention(q, k_cache, v_cache, meta.decode_blocks, meta.decode_mask, scale=scale)


def decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    blocks: torch.Tensor,
    mask: torch.Tensor,
    *,
    scale: float,
) -> torch.Tensor:
    """q: (decodes, heads, head_dim); blocks: (decodes, max_blocks); mask: (decodes, 1, 1, max_blocks *
    block_size) -> (decodes, heads, head_dim)."""
    num_kv_heads, head_dim = k_cache.shape[2], k_cache.shape[3]
    b, h = q.shape[0], q.shape[1]
    group = h // num_kv_heads
    keys = _gather_blocks(k_cache, blocks).transpose(1, 2)  # (decodes, kv_heads, ctx, head_dim)
    values = _gather_blocks(v_cache, blocks).transpose(1, 2)
    qg = q.view(b, num_kv_heads, group, head_dim)  # (decodes, kv_heads, group, head_dim)
    out = F.scaled_dot_product_attention(qg, keys, values, attn_mask=mask, scale=scale)
    return out.reshape(b, h, head_dim)


def prefill_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    seg: PrefillSegment,
    *,
    scale: float,
) -> torch.Tensor:
    """q: (chunk, heads, head_dim); k, v: (chunk, kv_heads, head_dim) -> (chunk, heads, head_dim)."""
    k, v = _prefill_context(k, v, k_cache, v_cache, seg)
    qt = q.transpose(0, 1).unsqueeze(0)  # (1, heads, chunk, head_dim)
    kt = k.transpose(0, 1).unsqueeze(0)  # (1, kv_heads, context, head_dim)
    vt = v.transpose(0, 1).unsqueeze(0)
    if seg.mask is None:
        chunk = q.shape[0]
        pad = -chunk % SDPA_ALIGN if q.device.type == "cpu" else 0
        if pad:  # rows and keys added at the end: causal, no real row sees them
            qt, kt, vt = (F.pad(x, (0, 0, 0, pad)) for x in (qt, kt, vt))
        out = F.scaled_dot_product_attention(qt, kt, vt, is_causal=True, scale=scale, enable_gqa=True)
        return out[0, :, :chunk].transpose(0, 1)  # (chunk, heads, head_dim)
    # With an explicit mask the query heads of a GQA group can be folded into rows, one SDPA head per kv head:
    # bit-identical to enable_gqa, and faster for a short chunk behind a long cached context (one attention of
    # group * chunk rows per kv head).
    chunk, heads, head_dim = q.shape
    kv_heads = k.shape[1]
    group = heads // kv_heads
    qf = qt.reshape(1, kv_heads, group * chunk, head_dim)  # (1, kv_heads, group * chunk, head_dim)
    pad = -kt.shape[2] % SDPA_ALIGN if q.device.type == "cpu" else 0
    if pad:  # keys added at the end of the context, masked out
        kt, vt = F.pad(kt, (0, 0, 0, pad)), F.pad(vt, (0, 0, 0, pad))
    if seg.folded_mask is None or seg.folded_mask.shape != (group * chunk, seg.mask.shape[1] + pad):
        seg.folded_mask = F.pad(seg.mask, (0, pad), value=-torch.inf).repeat(group, 1)
    out = F.scaled_dot_product_attention(qf, kt, vt, attn_mask=seg.folded_mask, scale=scale)
    # reshape, not view: CUDA's SDPA returns its heads and rows in another memory order than the CPU's
    return out.reshape(heads, chunk, head_dim).transpose(0, 1)  # (chunk, heads, head_dim)


def _prefill_context(
    k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, seg: PrefillSegment
) -> tuple[torch.Tensor, torch.Tensor]:
    """The K/V a chunk attends to: its own (a fresh prompt), else its whole context (chunk included, already
    written to the cache) -> (context, kv_heads, head_dim) each."""
    if seg.first_block is not None:
        blocks = slice(seg.first_block, seg.first_block + (seg.context_len + k_cache.shape[1] - 1) // k_cache.shape[1])
        return (k_cache[blocks].flatten(0, 1)[: seg.context_len],  # a view, no copy
                v_cache[blocks].flatten(0, 1)[: seg.context_len])
    if seg.context_blocks is not None:
        return (_gather_blocks(k_cache, seg.context_blocks)[: seg.context_len],
                _gather_blocks(v_cache, seg.context_blocks)[: seg.context_len])
    return k, v


def _gather_blocks(cache: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
    """cache: (num_blocks, block_size, kv_heads, head_dim); blocks: (..., n) -> (..., n * block_size, kv_heads,
    head_dim).

    Whole blocks (block_size * kv_heads * head_dim contiguous values) are copied with one index_select: fewer,
    longer memcpys than gathering token slots, and several times faster than advanced indexing on CPU.
    """
    _, block_size, kv_heads, head_dim = cache.shape
    picked = cache.index_select(0, blocks.reshape(-1))  # (blocks, block_size, kv_heads, head_dim)
    return picked.view(*blocks.shape[:-1], blocks.shape[-1] * block_size, kv_heads, head_dim)
