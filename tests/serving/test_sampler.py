"""SamplingParams validation and the sampler on hand-made logits (no model)."""

from __future__ import annotations

import pytest
import torch

from ragsvc.serving.sampler import sample
from ragsvc.serving.sampling_params import SamplingParams


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"temperature": -0.1}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"logprobs": 21}, "logprobs"),
        ({"temperature": float("nan")}, "temperature must be a finite number"),
        ({"temperature": float("inf")}, "temperature must be a finite number"),
        ({"seed": 1 << 63}, "seed must be in"),
    ],
)
def test_bad_sampling_params_name_the_field(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        SamplingParams(**kwargs)


def _logits(rows: int = 4, vocab: int = 50, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, vocab, generator=torch.Generator().manual_seed(seed)) * 3


def test_greedy_is_argmax_and_logprobs_are_raw_log_softmax() -> None:
    logits = _logits()
    params = [SamplingParams(temperature=0, logprobs=3)] * 4
    out = sample(logits, params, [None] * 4)
    ref = torch.log_softmax(logits, dim=-1)
    for row, tok in enumerate(out):
        assert tok.token_id == int(logits[row].argmax())
        assert tok.logprob == pytest.approx(float(ref[row, tok.token_id]), abs=1e-6)
        assert [t for t, _ in tok.top] == ref[row].topk(3).indices.tolist()


def test_logprobs_ignore_temperature() -> None:
    logits = _logits(rows=1)
    hot = sample(logits, [SamplingParams(temperature=5.0, logprobs=0, seed=1)], [torch.Generator().manual_seed(1)])
    assert hot[0].logprob == pytest.approx(float(torch.log_softmax(logits[0], -1)[hot[0].token_id]), abs=1e-6)
    assert hot[0].top == []


def test_top_k_one_and_tiny_top_p_reduce_to_greedy() -> None:
    logits = _logits(rows=6)
    argmax = logits.argmax(dim=-1).tolist()
    k1 = sample(logits, [SamplingParams(temperature=1.0, top_k=1)] * 6, [None] * 6)
    p0 = sample(logits, [SamplingParams(temperature=1.0, top_p=1e-6)] * 6, [None] * 6)
    assert [t.token_id for t in k1] == argmax == [t.token_id for t in p0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_top_k_one_and_tiny_top_p_break_ties_as_greedy_does(dtype) -> None:
    """Tied maxima (common in bf16 logits): greedy takes the first; top_k=1 and a tiny top_p take the same one,
    wherever the ties sit in the vocabulary."""
    rng = torch.Generator().manual_seed(1)
    logits = (torch.randn(16, 4000, generator=rng) * 2).to(dtype)
    for row in range(16):
        tied = torch.randperm(4000, generator=rng)[: 2 + row % 5]
        logits[row, tied] = 9.0
    greedy = [t.token_id for t in sample(logits, [SamplingParams(temperature=0)] * 16, [None] * 16)]
    k1 = sample(logits, [SamplingParams(temperature=1.0, top_k=1)] * 16, [None] * 16)
    p0 = sample(logits, [SamplingParams(temperature=0.7, top_p=1e-6)] * 16, [None] * 16)
    assert greedy == [int((logits[r] == 9.0).nonzero()[0]) for r in range(16)]
    assert [t.token_id for t in k1] == greedy == [t.token_id for t in p0]


def test_top_k_never_samples_outside_the_k_best() -> None:
    logits = _logits(rows=1, vocab=30).repeat(200, 1)
    allowed = set(logits[0].topk(3).indices.tolist())
    out = sample(logits, [SamplingParams(temperature=2.0, top_k=3)] * 200, [None] * 200)
    picked = {t.token_id for t in out}
    assert picked <= allowed and len(picked) > 1


def test_seeded_rows_do_not_depend_on_their_batch() -> None:
    logits = _logits(rows=3)
    p = SamplingParams(temperature=1.0, seed=123)

    def draw(batch_rows: list[int]) -> list[int]:
        gens = [torch.Generator().manual_seed(123) for _ in batch_rows]
        return [t.token_id for t in sample(logits[batch_rows], [p] * len(batch_rows), gens)]

    alone = [draw([r])[0] for r in range(3)]
    together = draw([0, 1, 2])
    assert alone == together


def test_mixed_greedy_and_random_rows() -> None:
    logits = _logits(rows=4)
    params = [
        SamplingParams(temperature=0),
        SamplingParams(temperature=0.7, top_p=0.9, seed=3),
        SamplingParams(temperature=0),
        SamplingParams(temperature=1.3, top_k=5),
    ]
    gens = [None, torch.Generator().manual_seed(3), None, None]
    out = sample(logits, params, gens)
    assert out[0].token_id == int(logits[0].argmax()) and out[2].token_id == int(logits[2].argmax())
    assert out[3].token_id in logits[3].topk(5).indices.tolist()


def test_sampling_frequencies_follow_the_tempered_softmax() -> None:
    logits = torch.tensor([[0.0, 1.0, 2.0, -1.0]]).repeat(20_000, 1)
    out = sample(logits, [SamplingParams(temperature=0.5)] * 20_000, [None] * 20_000)
    counts = torch.bincount(torch.tensor([t.token_id for t in out]), minlength=4).float() / 20_000
    torch.testing.assert_close(counts, torch.softmax(logits[0] / 0.5, dim=-1), atol=0.015, rtol=0)


def test_wide_nucleus_falls_back_to_an_exact_full_sort() -> None:
    # 1,000 equally likely tokens: a 0.95 nucleus holds ~950 of them, far beyond the 256 fast candidates.
    logits = torch.zeros(3000, 1000)
    out = sample(logits, [SamplingParams(temperature=1.0, top_p=0.95)] * 3000, [None] * 3000)
    picked = torch.tensor([t.token_id for t in out])
    assert picked.unique().numel() > 600


def test_bf16_logits_sample_like_their_float32_copy() -> None:
    """The runner hands over logits in the model's dtype: greedy argmax on them directly, the rest on a copy."""
    logits = torch.randn(6, 49152, generator=torch.Generator().manual_seed(4)).to(torch.bfloat16) * 3
    params = [SamplingParams(temperature=0), SamplingParams(temperature=0, logprobs=3)] * 2 + [
        SamplingParams(temperature=0.8, seed=11)
    ] * 2
    gens = [None] * 4 + [torch.Generator().manual_seed(11) for _ in range(2)]
    ours = sample(logits, params, gens)
    gens = [None] * 4 + [torch.Generator().manual_seed(11) for _ in range(2)]
    ref = sample(logits.float(), params, gens)
    assert [t.token_id for t in ours] == [t.token_id for t in ref]
    assert [t.logprob for t in ours] == [t.logprob for t in ref]
    assert [t.top for t in ours] == [t.top for t in ref]
    greedy_only = sample(logits, [SamplingParams(temperature=0)] * 6, [None] * 6)
    assert [t.token_id for t in greedy_only] == logits.float().max(dim=-1).indices.tolist()
