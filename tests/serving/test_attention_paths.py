"""The CPU attention paths against each other: a chunk's cached context read in place (consecutive blocks)
or gathered block by block gives the same output."""

from __future__ import annotations

import torch

from ragsvc.serving.layers.attention import SDPA_ALIGN, PrefillSegment, prefill_attention


def test_context_slice_and_gather_agree() -> None:
    g = torch.Generator().manual_seed(0)
    num_blocks, block_size, kv_heads, head_dim, heads = 12, 4, 2, 16, 4
    k_cache = torch.randn(num_blocks, block_size, kv_heads, head_dim, generator=g)
    v_cache = torch.randn(num_blocks, block_size, kv_heads, head_dim, generator=g)
    start, chunk = 13, 5  # context of 18 tokens: blocks 3..7
    end = start + chunk
    q = torch.randn(chunk, heads, head_dim, generator=g)
    k = k_cache[3:8].flatten(0, 1)[start:end]  # (chunk, kv_heads, head_dim): the chunk's own keys
    v = v_cache[3:8].flatten(0, 1)[start:end]
    mask = torch.zeros(chunk, end).masked_fill_(
        torch.arange(end)[None, :] > torch.arange(start, end)[:, None], -torch.inf
    )
    blocks = torch.arange(3, 8)
    gathered = PrefillSegment(0, chunk, end, blocks, mask)
    in_place = PrefillSegment(0, chunk, end, blocks, mask, first_block=3)
    out_gathered = prefill_attention(q, k, v, k_cache, v_cache, gathered, scale=0.25)
    out_in_place = prefill_attention(q, k, v, k_cache, v_cache, in_place, scale=0.25)
    assert torch.equal(out_gathered, out_in_place)
    # and both are causal attention over the context: the first chunk row sees positions 0..start
    ctx_k = k_cache[3:8].flatten(0, 1)[:end]
    ctx_v = v_cache[3:8].flatten(0, 1)[:end]
    rep_k, rep_v = ctx_k.repeat_interleave(2, dim=1), ctx_v.repeat_interleave(2, dim=1)  # (context, heads, dim)
    scores = torch.einsum("hd,chd->hc", q[0], rep_k[: start + 1]) * 0.25
    ref = torch.einsum("hc,chd->hd", scores.softmax(-1), rep_v[: start + 1])
    torch.testing.assert_close(out_in_place[0], ref, atol=1e-5, rtol=1e-5)


def test_masked_chunk_matches_plain_gqa_sdpa() -> None:
    """The masked path folds each GQA group's query heads into rows; it must equal SDPA with enable_gqa."""
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(1)
    chunk, context, heads, kv_heads, head_dim = 6, 20, 9, 3, 16
    q = torch.randn(chunk, heads, head_dim, generator=g).to(torch.bfloat16)
    k = torch.randn(context, kv_heads, head_dim, generator=g).to(torch.bfloat16)
    v = torch.randn(context, kv_heads, head_dim, generator=g).to(torch.bfloat16)
    allowed = torch.arange(context)[None, :] <= torch.arange(context - chunk, context)[:, None]
    mask = torch.zeros(chunk, context, dtype=torch.bfloat16).masked_fill_(~allowed, -torch.inf)
    k_cache = k.view(5, 4, kv_heads, head_dim)  # the context as 5 consecutive blocks of 4
    v_cache = v.view(5, 4, kv_heads, head_dim)
    seg = PrefillSegment(0, chunk, context, torch.arange(5), mask, first_block=0)
    ours = prefill_attention(q, k[-chunk:], v[-chunk:], k_cache, v_cache, seg, scale=0.25)
    pad = -context % SDPA_ALIGN  # the keys the CPU path adds (masked), so both see one key length
    ref = F.scaled_dot_product_attention(
        q.transpose(0, 1)[None],
        F.pad(k.transpose(0, 1)[None], (0, 0, 0, pad)),
        F.pad(v.transpose(0, 1)[None], (0, 0, 0, pad)),
        attn_mask=F.pad(mask, (0, pad), value=-torch.inf),
        scale=0.25,
        enable_gqa=True,
    )[0].transpose(0, 1)
    assert torch.equal(ours, ref)


def test_a_fresh_prompt_attends_over_aligned_rows_and_gives_the_causal_attention_of_its_own(monkeypatch) -> None:
    import torch.nn.functional as F


    g = torch.Generator().manual_seed(2)
    chunk, heads, kv_heads, head_dim = 45, 6, 2, 16  # 45 tokens: SDPA sees 64
    q = torch.randn(chunk, heads, head_dim, generator=g)
    k = torch.randn(chunk, kv_heads, head_dim, generator=g)
    v = torch.randn(chunk, kv_heads, head_dim, generator=g)
    lengths = []
    sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention",
                        lambda q_, k_, v_, **kw: lengths.append(k_.shape[2]) or sdpa(q_, k_, v_, **kw))
    seg = PrefillSegment(0, chunk, chunk, None, None)
    ours = prefill_attention(q, k, v, k, v, seg, scale=0.25)
    assert lengths == [SDPA_ALIGN * 2] and ours.shape == (chunk, heads, head_dim)
    rep_k, rep_v = k.repeat_interleave(3, dim=1), v.repeat_interleave(3, dim=1)  # (chunk, heads, head_dim)
    scores = torch.einsum("qhd,khd->hqk", q, rep_k) * 0.25
    scores = scores.masked_fill(torch.arange(chunk)[None, :] > torch.arange(chunk)[:, None], -torch.inf)
    ref = torch.einsum("hqk,khd->qhd", scores.softmax(-1), rep_v)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_a_chunk_behind_context_attends_over_aligned_keys_and_gives_the_same_attention(monkeypatch) -> None:
    import torch.nn.functional as F


    g = torch.Generator().manual_seed(3)
    chunk, context, heads, kv_heads, head_dim = 7, 37, 4, 2, 16  # 37 keys: SDPA sees 64, 27 of them masked
    q = torch.randn(chunk, heads, head_dim, generator=g)
    k = torch.randn(context, kv_heads, head_dim, generator=g)
    v = torch.randn(context, kv_heads, head_dim, generator=g)
    allowed = torch.arange(context)[None, :] <= torch.arange(context - chunk, context)[:, None]
    mask = torch.zeros(chunk, context).masked_fill_(~allowed, -torch.inf)
    k_cache, v_cache = (F.pad(x, (0, 0, 0, 0, 0, 3)).view(5, 8, kv_heads, head_dim) for x in (k, v))
    keys = []
    sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention",
                        lambda q_, k_, v_, **kw: keys.append(k_.shape[2]) or sdpa(q_, k_, v_, **kw))
    seg = PrefillSegment(0, chunk, context, torch.arange(5), mask, first_block=0)
    ours = prefill_attention(q, k[-chunk:], v[-chunk:], k_cache, v_cache, seg, scale=0.25)
    assert keys == [SDPA_ALIGN * 2]
    rep_k, rep_v = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q, rep_k) * 0.25 + mask
    ref = torch.einsum("hqk,khd->qhd", scores.softmax(-1), rep_v)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
